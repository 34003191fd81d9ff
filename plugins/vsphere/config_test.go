package vsphere

import (
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk/schema"
)

func TestValidateConfig(t *testing.T) {
	t.Parallel()
	base := func(extra map[string]cty.Value) map[string]cty.Value {
		m := map[string]cty.Value{
			"url": cty.StringVal("https://vc.example.com/sdk"), "username": cty.StringVal("u"), "password": cty.StringVal("p"),
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	target := func(extra map[string]cty.Value) map[string]cty.Value {
		m := base(map[string]cty.Value{"datastore": cty.StringVal("ds1"),
			"local_datastore_paths": cty.MapVal(map[string]cty.Value{"ds1": cty.StringVal("/mnt/ds1")})})
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tp := "4F:2A:1B:3C:5D:6E:7F:80:91:A2:B3:C4:D5:E6:F7:08:19:2A:3B:4C"
	cases := []struct {
		name   string
		target bool
		attrs  map[string]cty.Value
		path   string // the attribute the error is about; "" = no error
		inMsg  string
	}{
		{"minimal", false, base(nil), "", ""},
		{"host only URL", false, base(map[string]cty.Value{"url": cty.StringVal("vc.example.com")}), "", ""},
		{"bad scheme", false, base(map[string]cty.Value{"url": cty.StringVal("ftp://vc")}), "url", "scheme"},
		{"no host", false, base(map[string]cty.Value{"url": cty.StringVal("https:///sdk")}), "url", "no host"},
		{"credentials in URL", false, base(map[string]cty.Value{"url": cty.StringVal("https://a:b@vc/sdk")}), "url", "credentials"},
		{"empty password", false, base(map[string]cty.Value{"password": cty.StringVal("")}), "password", "empty"},
		{"unknown password (env at validate time)", false, base(map[string]cty.Value{"password": cty.UnknownVal(cty.String)}), "", ""},
		{"insecure with ca_file", false, base(map[string]cty.Value{"insecure": cty.True, "ca_file": cty.StringVal("/etc/ca.pem")}), "insecure", "insecure"},
		{"insecure with thumbprint", false, base(map[string]cty.Value{"insecure": cty.True, "thumbprint": cty.StringVal(tp)}), "insecure", "insecure"},
		{"insecure alone", false, base(map[string]cty.Value{"insecure": cty.True}), "", ""},
		{"ca_file and thumbprint", false, base(map[string]cty.Value{"ca_file": cty.StringVal("/ca.pem"), "thumbprint": cty.StringVal(tp)}), "thumbprint", "either"},
		{"relative ca_file", false, base(map[string]cty.Value{"ca_file": cty.StringVal("ca.pem")}), "ca_file", "absolute"},
		{"thumbprint lower case without colons", false, base(map[string]cty.Value{"thumbprint": cty.StringVal(strings.ToLower(strings.ReplaceAll(tp, ":", "")))}), "", ""},
		{"thumbprint too short", false, base(map[string]cty.Value{"thumbprint": cty.StringVal("AB:CD")}), "thumbprint", "20"},
		{"thumbprint not hex", false, base(map[string]cty.Value{"thumbprint": cty.StringVal("zz")}), "thumbprint", "hexadecimal"},
		{"relative mount path", false, base(map[string]cty.Value{"local_datastore_paths": cty.MapVal(map[string]cty.Value{"ds1": cty.StringVal("mnt")})}), `local_datastore_paths["ds1"]`, "absolute"},
		{"unknown transport", false, base(map[string]cty.Value{"transport": cty.StringVal("nbd")}), "transport", "none of"},
		{"hotadd", false, base(map[string]cty.Value{"transport": cty.StringVal("hotadd"), "hotadd_proxy": cty.StringVal("proxy-01"), "hotadd_device_dir": cty.StringVal("/dev/disk/by-id")}), "", ""},
		{"empty hotadd_proxy", false, base(map[string]cty.Value{"hotadd_proxy": cty.StringVal("")}), "hotadd_proxy", "Empty"},
		{"relative hotadd_device_dir", false, base(map[string]cty.Value{"hotadd_device_dir": cty.StringVal("dev/disk")}), "hotadd_device_dir", "absolute"},
		{"target minimal", true, target(nil), "", ""},
		{"target datastore not mapped", true, target(map[string]cty.Value{"local_datastore_paths": cty.NullVal(cty.Map(cty.String))}), "local_datastore_paths", "writes replica disks directly"},
		{"target datastore mapped to another", true, target(map[string]cty.Value{"datastore": cty.StringVal("ds2")}), "local_datastore_paths", `"ds2"`},
		{"target cluster and host", true, target(map[string]cty.Value{"cluster": cty.StringVal("c"), "host": cty.StringVal("h")}), "host", "not both"},
		{"target empty folder", true, target(map[string]cty.Value{"folder": cty.StringVal("")}), "folder", "Empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var diags schema.Diagnostics
			if tc.target {
				diags = validateTarget(configValue(targetSchema(), tc.attrs))
			} else {
				diags = validateSource(configValue(sourceSchema(), tc.attrs))
			}
			if tc.path == "" {
				if diags.HasErrors() {
					t.Fatalf("unexpected errors: %v", diags.Err())
				}
				return
			}
			found := false
			for _, d := range diags {
				if d.Severity == schema.Error && schema.FormatPath(d.Path) == tc.path && strings.Contains(d.Summary+": "+d.Detail, tc.inMsg) {
					found = true
				}
			}
			if !found {
				t.Fatalf("want an error at %s mentioning %q, got %v", tc.path, tc.inMsg, diags.Err())
			}
		})
	}
}

func TestValidatePlainHTTPWarns(t *testing.T) {
	t.Parallel()
	diags := validateSource(configValue(sourceSchema(), map[string]cty.Value{"url": cty.StringVal("http://vc/sdk")}))
	if diags.HasErrors() || len(diags) != 1 || diags[0].Severity != schema.Warning {
		t.Fatalf("plain http: %+v, want one warning", diags)
	}
}

func TestNormalizeThumbprint(t *testing.T) {
	t.Parallel()
	sha1 := "4F:2A:1B:3C:5D:6E:7F:80:91:A2:B3:C4:D5:E6:F7:08:19:2A:3B:4C"
	sha256 := strings.Repeat("AB:", 31) + "CD"
	for in, want := range map[string]string{
		sha1:                              sha1,
		strings.ToLower(sha1):             sha1,
		strings.ReplaceAll(sha1, ":", ""): sha1,
		" " + sha1 + " ":                  sha1,
		sha256:                            sha256,
	} {
		got, err := normalizeThumbprint(in)
		if err != nil || got != want {
			t.Errorf("normalizeThumbprint(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "AB", "GG:00", sha1 + ":00"} {
		if _, err := normalizeThumbprint(bad); err == nil {
			t.Errorf("normalizeThumbprint(%q) succeeded", bad)
		}
	}
}

func TestParseURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"vc.example.com":               "https://vc.example.com/sdk",
		"https://vc.example.com":       "https://vc.example.com/sdk",
		"https://vc.example.com/":      "https://vc.example.com/sdk",
		"https://vc:8443/sdk":          "https://vc:8443/sdk",
		"https://10.0.0.5/custom/path": "https://10.0.0.5/custom/path",
	} {
		u, err := parseURL(in)
		if err != nil || u.String() != want {
			t.Errorf("parseURL(%q) = %v, %v; want %s", in, u, err, want)
		}
	}
}

func TestDecodeConfig(t *testing.T) {
	t.Parallel()
	attrs := map[string]cty.Value{
		"url": cty.StringVal("vc"), "username": cty.StringVal("u"), "password": cty.StringVal("p"),
		"thumbprint":            cty.StringVal(strings.Repeat("ab", 20)),
		"local_datastore_paths": cty.MapVal(map[string]cty.Value{"ds1": cty.StringVal("/mnt/ds1/")}),
		"datastore":             cty.StringVal("ds1"), "cluster": cty.StringVal("c1"),
	}
	c, err := decodeTarget(configValue(targetSchema(), attrs))
	if err != nil {
		t.Fatal(err)
	}
	if c.Thumbprint != strings.TrimSuffix(strings.Repeat("AB:", 20), ":") || c.Datastores["ds1"] != "/mnt/ds1" || c.Cluster != "c1" || c.Datastore != "ds1" {
		t.Fatalf("decoded %+v", c)
	}
	if _, err := decodeTarget(configValue(targetSchema(), map[string]cty.Value{"url": cty.StringVal("vc")})); err == nil {
		t.Fatal("a target without a mapped datastore decoded")
	}
}
