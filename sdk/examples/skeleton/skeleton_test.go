package skeleton_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/examples/skeleton"
	"github.com/ferry-dr/ferry/sdk/schema"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// TestPlugin checks the plugin's metadata, schema and Validate func.
func TestPlugin(t *testing.T) {
	sdktest.RunPlugin(t, skeleton.Plugin())
}

// TestRepositoryConformance runs every repository check on a repository
// built the way ferry builds one: from HCL, through the component's New.
func TestRepositoryConformance(t *testing.T) {
	sdktest.RunRepository(t, sdktest.RepositoryFixture{
		New: func(t *testing.T) sdk.Repository {
			return newFromHCL(t, `max_object_bytes = 33554432`)
		},
	})
}

// newFromHCL decodes a configuration block body as ferry would and builds
// the repository from it.
func newFromHCL(t *testing.T, body string) sdk.Repository {
	t.Helper()
	cfg, diags := decode(t, body)
	if diags.HasErrors() {
		t.Fatalf("configuration: %v", diags.Err())
	}
	repo, err := skeleton.Plugin().Repositories["skeleton"].New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// decode parses HCL against the component's schema and runs its Validate
// func.
func decode(t *testing.T, body string) (cty.Value, schema.Diagnostics) {
	t.Helper()
	c := skeleton.Plugin().Repositories["skeleton"]
	file, hdiags := hclsyntax.ParseConfig([]byte(body), "test.hcl", hcl.InitialPos)
	if hdiags.HasErrors() {
		t.Fatal(hdiags)
	}
	cfg, hdiags := hcldec.Decode(file.Body, c.Schema.Spec(), nil)
	if hdiags.HasErrors() {
		t.Fatal(hdiags)
	}
	return cfg, c.Validate(cfg)
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string // the path of the error, "" for none
	}{
		{"default", ``, ""},
		{"a limit", `max_object_bytes = 1024`, ""},
		{"zero", `max_object_bytes = 0`, "max_object_bytes"},
		{"negative", `max_object_bytes = -5`, "max_object_bytes"},
		{"fraction", `max_object_bytes = 1.5`, "max_object_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := decode(t, tt.body)
			if tt.want == "" {
				if diags.HasErrors() {
					t.Fatalf("unexpected diagnostics: %v", diags.Err())
				}
				return
			}
			if len(diags) != 1 || diags[0].Severity != schema.Error || schema.FormatPath(diags[0].Path) != tt.want {
				t.Fatalf("diagnostics = %+v, want one error at %s", diags, tt.want)
			}
		})
	}
}

func TestObjectSizeLimit(t *testing.T) {
	repo := newFromHCL(t, `max_object_bytes = 10`)
	ctx := context.Background()
	if _, err := repo.Put(ctx, "small", make([]byte, 10), sdk.IfAbsent); err != nil {
		t.Fatalf("an object at the limit: %v", err)
	}
	_, err := repo.Put(ctx, "large", make([]byte, 11), sdk.IfAbsent)
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("an object over the limit: got %v, want ErrInvalidArgument", err)
	}
}

func TestStoppedRepositoryRefusesCalls(t *testing.T) {
	repo := newFromHCL(t, ``)
	if err := repo.(sdk.Stopper).Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, _, err := repo.Get(context.Background(), "any")
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Get after Stop: got %v, want ErrUnavailable", err)
	}
}
