package sdktest

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// sourceFixture returns the fixture of a MemSource holding DefaultVM();
// wrap, when set, puts a decorator (a broken or a direct-lane source)
// around it.
func sourceFixture(wrap func(*MemSource) sdk.Source) SourceFixture {
	src := NewMemSource(DefaultVM())
	var under sdk.Source = src
	if wrap != nil {
		under = wrap(src)
	}
	return SourceFixture{
		New:          func(*testing.T) sdk.Source { return under },
		Capabilities: src.Capabilities(),
		VM:           DefaultVM().Name,
		Folder:       DefaultVM().Folder,
		Tags:         DefaultVM().Tags,
		Write: func(t *testing.T, vm string, disk int, off int64, data []byte) {
			if err := src.WriteDisk(vm, disk, off, data); err != nil {
				t.Fatal(err)
			}
		},
		ResetChangeTracking: func(t *testing.T, vm string, disk int) {
			if err := src.ResetChangeTracking(vm, disk); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// targetFixture returns the fixture of a MemTarget, with the crash hook
// when crash is set.
func targetFixture(crash bool, wrap func(*MemTarget) sdk.Target) TargetFixture {
	tgt := NewMemTarget()
	var under sdk.Target = tgt
	if wrap != nil {
		under = wrap(tgt)
	}
	fx := TargetFixture{
		New:          func(*testing.T) sdk.Target { return under },
		Capabilities: tgt.Capabilities(),
		WriteFailedOver: func(t *testing.T, replica string, disk int, off int64, data []byte) {
			if err := tgt.WriteFailedOver(replica, disk, off, data); err != nil {
				t.Fatal(err)
			}
		},
	}
	if crash {
		fx.Crash = func(*testing.T) { tgt.Crash() }
	}
	return fx
}

func TestRunSourceOnMemSource(t *testing.T) {
	t.Parallel()
	RunSource(t, sourceFixture(nil))
}

// TestRunSourceOnDirectSource runs the suite on a source that offers the
// direct lane, so the LocalPath check runs.
func TestRunSourceOnDirectSource(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fx := sourceFixture(func(s *MemSource) sdk.Source { return &directSource{MemSource: s, dir: dir} })
	fx.Capabilities.DirectData = true
	RunSource(t, fx)
}

func TestRunTargetOnMemTarget(t *testing.T) {
	t.Parallel()
	RunTarget(t, targetFixture(false, nil))
}

func TestRunTargetOnMemTargetWithCrashes(t *testing.T) {
	t.Parallel()
	RunTarget(t, targetFixture(true, nil))
}

func TestRunRepositoryOnMemRepository(t *testing.T) {
	t.Parallel()
	repo := NewMemRepository()
	RunRepository(t, RepositoryFixture{New: func(*testing.T) sdk.Repository { return repo },
		Damage: func(_ *testing.T, key string) { repo.Damage(key) }})
}

func TestRunPluginOnMemPlugin(t *testing.T) {
	RunPlugin(t, memPlugin())
}

// memPlugin serves the in-memory components as a plugin would, with a
// schema that has a nested block and a Validate func that warns.
func memPlugin() *sdk.Plugin {
	block := &schema.Block{
		Attributes: map[string]*schema.Attribute{
			"label": {Type: cty.String, Description: "a name for logs"},
			"tags":  {Type: cty.Map(cty.String)},
		},
		Blocks: map[string]*schema.NestedBlock{
			"limits": {Nesting: schema.NestingSingle, Block: schema.Block{Attributes: map[string]*schema.Attribute{
				"max_mib": {Type: cty.Number, Required: true},
			}}},
			"disk": {Nesting: schema.NestingList, Block: schema.Block{Attributes: map[string]*schema.Attribute{
				"size": {Type: cty.Number},
			}}},
		},
	}
	validate := func(v cty.Value) schema.Diagnostics {
		var diags schema.Diagnostics
		if v.IsNull() {
			return nil
		}
		if v.GetAttr("label").IsNull() {
			diags = append(diags, schema.Diagnostic{Severity: schema.Warning, Summary: "no label", Path: cty.GetAttrPath("label")})
		}
		if limits := v.GetAttr("limits"); !limits.IsNull() && limits.GetAttr("max_mib").IsNull() {
			diags.Errorf(cty.GetAttrPath("limits").GetAttr("max_mib"), "missing max_mib", "set it")
		}
		return diags
	}
	return &sdk.Plugin{
		Name:    "mem",
		Version: "1.0.0-test+sdktest",
		Sources: map[string]sdk.Component[sdk.Source]{"mem": {
			Schema: block, Validate: validate, Capabilities: NewMemSource().Capabilities(),
			New: func(context.Context, cty.Value) (sdk.Source, error) { return NewMemSource(DefaultVM()), nil },
		}},
		Targets: map[string]sdk.Component[sdk.Target]{"mem": {
			Schema: block, Capabilities: NewMemTarget().Capabilities(),
			New: func(context.Context, cty.Value) (sdk.Target, error) { return NewMemTarget(), nil },
		}},
		Repositories: map[string]sdk.Component[sdk.Repository]{"mem": {
			Schema: &schema.Block{}, Validate: func(cty.Value) schema.Diagnostics { return nil },
			New: func(context.Context, cty.Value) (sdk.Repository, error) { return NewMemRepository(), nil },
		}},
	}
}

// directSource offers the direct lane: each snapshot disk it opens is
// also written to a file, whose path the reader gives. corrupt flips a
// byte of the file, which the LocalPath check must catch.
type directSource struct {
	*MemSource
	dir     string
	corrupt bool
}

type pathReader struct {
	sdk.DiskReader
	path string
}

func (r *pathReader) LocalPath() string { return r.path }

func (s *directSource) OpenSnapshotDisk(ctx context.Context, vm, snapshot string, disk int) (sdk.DiskReader, error) {
	r, err := s.MemSource.OpenSnapshotDisk(ctx, vm, snapshot, disk)
	if err != nil {
		return nil, err
	}
	data, err := readAll(r, r.Size())
	if err != nil {
		return nil, err
	}
	if s.corrupt && len(data) > 0 {
		data[len(data)/2] ^= 0x5a
	}
	f, err := os.CreateTemp(s.dir, fmt.Sprintf("disk%d-*.raw", disk))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return nil, err
	}
	return &pathReader{DiskReader: r, path: f.Name()}, nil
}

// TestRunSuitesOverWire runs the suites on the in-memory components served
// over gRPC in this process (Connect), so the reference components and the
// SDK's glue are held to the same contract as plugins.
func TestRunSuitesOverWire(t *testing.T) {
	t.Parallel()
	src := NewMemSource(DefaultVM())
	direct := &directSource{MemSource: src, dir: t.TempDir()}
	srcCaps := src.Capabilities()
	srcCaps.DirectData = true
	tgt := NewMemTarget()
	repo := NewMemRepository()
	empty := &schema.Block{}
	p := &sdk.Plugin{
		Name:    "mem",
		Version: "1.0.0",
		Sources: map[string]sdk.Component[sdk.Source]{"mem": {Schema: empty, Capabilities: srcCaps,
			New: func(context.Context, cty.Value) (sdk.Source, error) { return direct, nil }}},
		Targets: map[string]sdk.Component[sdk.Target]{"mem": {Schema: empty, Capabilities: tgt.Capabilities(),
			New: func(context.Context, cty.Value) (sdk.Target, error) { return tgt, nil }}},
		Repositories: map[string]sdk.Component[sdk.Repository]{"mem": {Schema: empty,
			New: func(context.Context, cty.Value) (sdk.Repository, error) { return repo, nil }}},
	}
	c := Connect(t, p)
	// remote configures one instance of a component on the plugin side.
	remote := func(t *testing.T, kind sdk.Kind) any {
		var (
			comp  any
			diags schema.Diagnostics
			err   error
		)
		switch kind {
		case sdk.KindSource:
			comp, diags, err = c.Source(t.Context(), "mem", empty, cty.EmptyObjectVal)
		case sdk.KindTarget:
			comp, diags, err = c.Target(t.Context(), "mem", empty, cty.EmptyObjectVal)
		default:
			comp, diags, err = c.Repository(t.Context(), "mem", empty, cty.EmptyObjectVal)
		}
		if err != nil || diags.HasErrors() {
			t.Fatalf("configure %s: %v %v", kind, err, diags.Err())
		}
		return comp
	}

	t.Run("Source", func(t *testing.T) {
		fx := sourceFixture(nil)
		fx.Capabilities = srcCaps
		fx.New = func(t *testing.T) sdk.Source { return remote(t, sdk.KindSource).(sdk.Source) }
		fx.Write = func(t *testing.T, vm string, disk int, off int64, data []byte) {
			if err := src.WriteDisk(vm, disk, off, data); err != nil {
				t.Fatal(err)
			}
		}
		fx.ResetChangeTracking = func(t *testing.T, vm string, disk int) {
			if err := src.ResetChangeTracking(vm, disk); err != nil {
				t.Fatal(err)
			}
		}
		RunSource(t, fx)
	})
	t.Run("Target", func(t *testing.T) {
		RunTarget(t, TargetFixture{
			New:          func(t *testing.T) sdk.Target { return remote(t, sdk.KindTarget).(sdk.Target) },
			Capabilities: tgt.Capabilities(),
			Crash:        func(*testing.T) { tgt.Crash() },
		})
	})
	t.Run("Repository", func(t *testing.T) {
		RunRepository(t, RepositoryFixture{New: func(t *testing.T) sdk.Repository { return remote(t, sdk.KindRepository).(sdk.Repository) },
			Damage: func(_ *testing.T, key string) { repo.Damage(key) }})
	})
}
