//go:build windows

package wmihost

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	ole "github.com/go-ole/go-ole"
	cim "github.com/microsoft/wmi/pkg/wmiinstance"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// namespace is Hyper-V's WMI namespace.
const namespace = `root\virtualization\v2`

// conn is one WMI session to root\virtualization\v2 of this machine. COM
// objects are used from one call at a time (sem), each on a locked OS
// thread that joined the multithreaded apartment, so no call depends on
// which goroutine or thread made the session.
type conn struct {
	sem  chan struct{}
	mgr  *cim.WmiSessionManager
	sess *cim.WmiSession
}

func dial() (c *conn, err error) {
	c = &conn{sem: make(chan struct{}, 1)}
	err = c.do(context.Background(), func() error {
		// NewWmiSessionManager panics when COM cannot start; do
		// recovers that into an error.
		c.mgr = cim.NewWmiSessionManager()
		s, err := c.mgr.GetLocalSession(namespace)
		if err != nil {
			return err
		}
		if ok, err := s.Connect(); !ok || err != nil {
			return fmt.Errorf("connect to %s: %v: %w", namespace, err, errdefs.ErrUnavailable)
		}
		c.sess = s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hyper-v wmi (is the Hyper-V role installed, and does the plugin run as an administrator?): %w", err)
	}
	return c, nil
}

// do runs fn alone, on a locked thread in COM's multithreaded apartment,
// and turns a panic of the WMI module (it panics on answers of a type it
// did not expect) into an error.
func (c *conn) do(ctx context.Context, fn func() error) (err error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.sem }()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if cerr := ole.CoInitializeEx(0, ole.COINIT_MULTITHREADED); cerr == nil {
		defer ole.CoUninitialize()
	} else if oe, ok := cerr.(*ole.OleError); ok && oe.Code() == 1 { // S_FALSE: joined already
		defer ole.CoUninitialize()
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("wmi: %v: %w", r, errdefs.ErrUnavailable)
		}
	}()
	return fn()
}

// obj is a WMI object. Its getters answer nil for a property it lacks,
// which the readers of values.go take as empty.
type obj struct{ *cim.WmiInstance }

func (o obj) get(name string) any {
	v, err := o.GetProperty(name)
	if err != nil {
		return nil
	}
	return v
}

func (o obj) str(name string) string { return toString(o.get(name)) }

func (o obj) path() string { return o.InstancePath() }

func closeAll(os []obj) {
	for _, o := range os {
		o.Close()
	}
}

func wrap(in []*cim.WmiInstance) []obj {
	out := make([]obj, len(in))
	for i, x := range in {
		out[i] = obj{x}
	}
	return out
}

// query runs a WQL query; the caller closes what it returns.
func (c *conn) query(wql string) ([]obj, error) {
	r, err := c.sess.QueryInstances(wql)
	if err != nil {
		return nil, fmt.Errorf("wmi query %q: %v: %w", wql, err, errdefs.ErrUnavailable)
	}
	return wrap(r), nil
}

// one runs a query that must find one object; none is ErrNotFound.
func (c *conn) one(wql, what string) (obj, error) {
	r, err := c.query(wql)
	if err != nil {
		return obj{}, err
	}
	if len(r) == 0 {
		return obj{}, fmt.Errorf("%s: %w", what, errdefs.ErrNotFound)
	}
	closeAll(r[1:])
	return r[0], nil
}

// related lists the objects of class associated with o.
func (c *conn) related(o obj, class string) ([]obj, error) {
	r, err := o.GetAllRelated(class)
	if err != nil {
		return nil, fmt.Errorf("%s of %s: %v: %w", class, o.path(), err, errdefs.ErrUnavailable)
	}
	return wrap(r), nil
}

// byPath fetches an object by its path.
func (c *conn) byPath(path string) (obj, error) {
	o, err := c.sess.GetInstance(path)
	if err != nil {
		return obj{}, fmt.Errorf("%s: %v: %w", path, err, errdefs.ErrNotFound)
	}
	return obj{o}, nil
}

// service fetches the one instance of a Msvm_*Service class.
func (c *conn) service(class string) (obj, error) {
	return c.one("SELECT * FROM "+class, class)
}

// param is one IN parameter of a method.
type param struct {
	name  string
	value any
}

// maxRetries bounds the retries of a method the host answers "busy".
const maxRetries = 10

// call runs a method of o, waits for the job it starts (return code
// 4096) and returns the OUT parameters named (their values as WMI gives
// them: a REF is an object path, an embedded instance its text). A
// cancelled ctx stops the wait, not the job, which Hyper-V finishes.
func (c *conn) call(ctx context.Context, o obj, method string, in []param, outs ...string) (map[string]any, error) {
	m, err := o.GetWmiMethod(method)
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %w", method, err, errdefs.ErrUnavailable)
	}
	defer m.Close()
	inp := cim.WmiMethodParamCollection{}
	for _, p := range in {
		inp = append(inp, cim.NewWmiMethodParam(p.name, p.value))
	}
	outp := cim.WmiMethodParamCollection{cim.NewWmiMethodParam("Job", nil)}
	for _, n := range outs {
		outp = append(outp, cim.NewWmiMethodParam(n, nil))
	}
	for try := 0; ; try++ {
		res, err := m.Execute(inp, outp)
		if err != nil {
			return nil, fmt.Errorf("%s: %v: %w", method, err, errdefs.ErrUnavailable)
		}
		rc := int(res.ReturnValue)
		if retryable(rc) && try < maxRetries {
			if err := sleep(ctx, time.Duration(try+1)*200*time.Millisecond); err != nil {
				return nil, err
			}
			continue
		}
		if err := methodError(method, rc); err != nil {
			return nil, err
		}
		out := map[string]any{}
		for n, p := range res.OutMethodParams {
			out[n] = p.Value
		}
		if rc == rcJobStarted {
			if err := c.wait(ctx, method, toString(out["Job"])); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
}

// wait polls a job until it finishes.
func (c *conn) wait(ctx context.Context, op, path string) error {
	if path == "" {
		return fmt.Errorf("%s: a job was started but not named: %w", op, errdefs.ErrUnavailable)
	}
	for {
		o, err := c.byPath(path)
		if err != nil {
			return fmt.Errorf("%s: job: %w", op, err)
		}
		j := job{State: toInt(o.get("JobState")), ErrorCode: toInt(o.get("ErrorCode")),
			ErrorDescription: o.str("ErrorDescription"), ErrorSummary: o.str("ErrorSummaryDescription")}
		o.Close()
		if jobDone(j.State) {
			return jobError(op, j)
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return fmt.Errorf("%s: stopped waiting; the job goes on on the host: %w", op, err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// embed returns the DTD 2.0 text of a new instance of class with props
// set: WMI writes it from the class, so every value has the schema's type.
func (c *conn) embed(class string, props []param) (string, error) {
	cls, err := c.sess.GetClass(class)
	if err != nil {
		return "", fmt.Errorf("class %s: %v: %w", class, err, errdefs.ErrUnavailable)
	}
	defer cls.Close()
	inst, err := cls.MakeInstance()
	if err != nil {
		return "", fmt.Errorf("new %s: %v: %w", class, err, errdefs.ErrUnavailable)
	}
	defer inst.Close()
	return embedObj(obj{inst}, props)
}

// embedObj sets props on o and returns its DTD 2.0 text, for a method
// that modifies o or adds a copy of it.
func embedObj(o obj, props []param) (string, error) {
	for _, p := range props {
		if err := o.SetProperty(p.name, p.value); err != nil {
			return "", fmt.Errorf("set %s.%s: %v: %w", o.GetClassName(), p.name, err, errdefs.ErrInvalidArgument)
		}
	}
	s, err := o.EmbeddedXMLInstance()
	if err != nil {
		return "", fmt.Errorf("%s as text: %v: %w", o.GetClassName(), err, errdefs.ErrUnavailable)
	}
	return s, nil
}

// defaults returns the default settings of a resource subtype (the
// resource pool's "Default" capabilities), the base of a new device.
func (c *conn) defaults(class, subtype string) (obj, error) {
	return c.one(fmt.Sprintf("SELECT * FROM %s WHERE ResourceSubType = %s AND InstanceID LIKE '%%Default'", class, wqlString(subtype)),
		"default settings of "+subtype)
}

var errNoOut = errors.New("the method returned no result")
