// Command crashrun runs one session of a job like `ferry run` does, with
// real plugins, and dies by SIGKILL at a chosen step: the end-to-end crash
// tests use it to prove that a kill at any step loses nothing.
//
//	crashrun -config DIR -job NAME -at STEP [-kill self|plugin] [-retry]
//	crashrun -config DIR -job NAME -kill-on-manifest-put N
//	crashrun -config DIR -job NAME -failback ACTION -vm VM -at STEP
//
// With -failback it runs a failback action (sync, switch, commit, undo)
// of one VM, as `ferry failback` does, and dies at the step named
// failback-<step> (or failback-moving, within a sync).
// It tries each VM once, whatever the job's retry block says: the crash
// tests test a kill and the run after it. With -retry it keeps the job's
// retry block and kills only the first time the step is reached, so that
// the session's retry is the run after the kill.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/engine"
	"github.com/ferry-dr/ferry/core/failback"
	"github.com/ferry-dr/ferry/core/pluginhost"
	"github.com/ferry-dr/ferry/sdk"
)

func main() {
	dir := flag.String("config", ".", "configuration folder")
	jobName := flag.String("job", "", "job to run")
	at := flag.String("at", "", "step to die at")
	kill := flag.String("kill", "self", "what to kill at the step: self or plugin")
	manifestPut := flag.Int("kill-on-manifest-put", 0, "die during the Nth write of a metadata manifest")
	retry := flag.Bool("retry", false, "keep the job's retry block and kill only the first time the step is reached")
	fbAction := flag.String("failback", "", "run this failback action instead of a session")
	fbVM := flag.String("vm", "", "the VM of -failback")
	flag.Parse()

	host := pluginhost.New(pluginhost.Options{Dirs: pluginhost.SearchPath(*dir)})
	defer host.Close()
	cfg, diags := config.Load(*dir, host)
	if diags.HasErrors() {
		fmt.Fprintln(os.Stderr, diags)
		os.Exit(1)
	}
	job := cfg.Jobs[*jobName]
	if job == nil {
		fmt.Fprintf(os.Stderr, "no job %q\n", *jobName)
		os.Exit(1)
	}
	if !*retry {
		job.Retry = config.Retry{Attempts: 1}
	}
	cat, err := catalog.Open(catalog.DefaultPath(cfg.Dir), catalog.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer cat.Close()
	cat.MarkAbandoned()
	eng := &engine.Engine{Components: comps{host: host, manifestPut: *manifestPut}, Catalog: cat}
	var killed atomic.Bool
	eng.Hook = func(step engine.Step, vm string) {
		if string(step) != *at || *retry && !killed.CompareAndSwap(false, true) {
			return
		}
		switch *kill {
		case "plugin":
			killPlugins()
		default:
			fmt.Println("dying at", step)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	eng.Events = func(e engine.Event) {
		if e.Kind == engine.Notice {
			fmt.Printf("note: %s: %s\n", e.VM, e.Message)
		}
	}
	if *fbAction != "" {
		res, err := eng.Failback(context.Background(), job, *fbVM, failback.Action(*fbAction), engine.FailbackOptions{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("failback", *fbAction, "done:", res.Steps)
		return
	}
	sess, err := eng.Run(context.Background(), job)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	if sess != nil {
		fmt.Println(sess.Result)
		for _, vm := range sess.VMs {
			var modes []string
			for _, d := range vm.Disks {
				modes = append(modes, string(d.Mode))
			}
			fmt.Println(vm.VM, vm.Result, "attempts", vm.Attempts, "modes", strings.Join(modes, ","), vm.Error)
		}
	}
}

// killPlugins kills every plugin process this process started.
func killPlugins() {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(os.Getpid()) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

type comps struct {
	host        *pluginhost.Host
	manifestPut int
}

func (c comps) Source(ctx context.Context, b *config.PluginBlock) (sdk.Source, sdk.Capabilities, error) {
	return c.host.Source(ctx, b.Type, b.Config)
}

func (c comps) Target(ctx context.Context, b *config.PluginBlock) (sdk.Target, sdk.Capabilities, error) {
	return c.host.Target(ctx, b.Type, b.Config)
}

func (c comps) Repository(ctx context.Context, b *config.PluginBlock) (sdk.Repository, error) {
	var r sdk.Repository
	var err error
	if b != nil {
		r, err = c.host.Repository(ctx, b.Type, b.Config)
	} else {
		r, err = c.host.Repository(ctx, "local", cty.ObjectVal(map[string]cty.Value{"path": cty.StringVal(".ferry/metadata")}))
	}
	if err != nil || c.manifestPut == 0 {
		return r, err
	}
	return &dyingRepo{Repository: r, at: int64(c.manifestPut)}, nil
}

// dyingRepo dies in the middle of the Nth manifest write: the write is
// sent, and the process is killed before it learns the result.
type dyingRepo struct {
	sdk.Repository
	at int64
	n  atomic.Int64
}

func (d *dyingRepo) Put(ctx context.Context, key string, data []byte, gen int64) (int64, error) {
	if strings.HasSuffix(key, "/manifest") && d.n.Add(1) == d.at {
		go func() {
			d.Repository.Put(ctx, key, data, gen)
		}()
		fmt.Println("dying in a manifest write")
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	return d.Repository.Put(ctx, key, data, gen)
}
