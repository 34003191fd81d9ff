package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/ferry-dr/ferry/core/pki"
)

// serviceName is the Windows service install-service makes.
const serviceName = "ferry-proxy"

// serviceLogName is the log file of the service, beside the binary: a
// service has no console, and a file needs no registration (the event log
// would need a message source installed and removed with the service).
const serviceLogName = "ferry-proxy.log"

// runStoppable runs serve until Ctrl-C, or, when the service control
// manager started this process, through svc.Run until the service is
// stopped or Windows shuts down. A service logs to serviceLogName beside
// the binary (what the proxy prints included).
func runStoppable(e *env, serve serveFunc) error {
	isService, err := svc.IsWindowsService()
	if err != nil {
		return fmt.Errorf("find out whether this runs as a service: %w", err)
	}
	if !isService {
		return runUntilSignal(e, serve)
	}
	path, err := serviceLogPath()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("service log: %w", err)
	}
	defer f.Close()
	se := &env{stdout: f, stderr: f, configDir: e.configDir,
		log: hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: e.log.GetLevel(), Output: f})}
	h := &proxyService{e: se, serve: serve}
	if err := svc.Run(serviceName, h); err != nil {
		fmt.Fprintf(f, "ferry proxy: run as service %s: %v\n", serviceName, err)
		return fmt.Errorf("run as service %s: %w", serviceName, err)
	}
	if h.err != nil {
		fmt.Fprintf(f, "ferry proxy: %v\n", h.err)
		return &exitError{code: exitFailure}
	}
	return nil
}

// serviceLogPath is the service's log file, beside the binary.
func serviceLogPath() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find ferry's binary: %w", err)
	}
	return filepath.Join(filepath.Dir(exe), serviceLogName), nil
}

// proxyService is the svc.Handler of the proxy: it reports StartPending
// until the proxy listens, then Running; Stop and Shutdown end it as
// Ctrl-C does.
type proxyService struct {
	e     *env
	serve serveFunc
	err   error // what serve returned; read after svc.Run returns
}

// stopWait is the hint given to the service control manager while the
// proxy starts or stops (a stop takes up to 5 seconds of graceful end).
const stopWait = 10 * time.Second

func (h *proxyService) Execute(_ []string, reqs <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending, WaitHint: uint32(stopWait.Milliseconds())}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() { done <- h.serve(h.e, ctx, func() { once.Do(func() { close(ready) }) }) }()
	const accepts = svc.AcceptStop | svc.AcceptShutdown
	for {
		select {
		case <-ready:
			ready = nil // a closed channel is always ready
			status <- svc.Status{State: svc.Running, Accepts: accepts}
		case err := <-done:
			if h.err = err; err != nil {
				return true, 1 // a service-specific exit code: see the log
			}
			return false, 0
		case r := <-reqs:
			switch r.Cmd {
			case svc.Interrogate:
				status <- r.CurrentStatus
			case svc.Stop, svc.Shutdown:
				status <- svc.Status{State: svc.StopPending, WaitHint: uint32(stopWait.Milliseconds())}
				cancel()
			}
		}
	}
}

// installService makes the service: automatic start, the proxy flags
// given (checked, and their folders made absolute) stored as its
// arguments, restarted by Windows when it fails.
func installService(e *env, args []string, f *proxyFlags) error {
	if err := f.check(args); err != nil {
		return err
	}
	creds, err := pki.Load(*f.tlsDir)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find ferry's binary: %w", err)
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return err
	}
	sargs, err := serviceArgs(e.configDir, e.log.GetLevel().String(), f.set)
	if err != nil {
		return err
	}
	m, err := connectSCM()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	if s, err := m.OpenService(serviceName); err == nil {
		s.Close()
		return fmt.Errorf("service %s exists; remove it first with 'ferry proxy remove-service'", serviceName)
	}
	name := creds.Identity().Name
	s, err := m.CreateService(serviceName, exe, mgr.Config{
		DisplayName: "ferry proxy " + name,
		Description: "Moves disk data for ferry's control plane (ferry proxy " + name + ").",
		StartType:   mgr.StartAutomatic,
	}, sargs...)
	if err != nil {
		return fmt.Errorf("create service %s: %w", serviceName, err)
	}
	defer s.Close()
	restart := []mgr.RecoveryAction{{Type: mgr.ServiceRestart, Delay: 10 * time.Second}, {Type: mgr.ServiceRestart, Delay: time.Minute}}
	if err := s.SetRecoveryActions(restart, uint32((24 * time.Hour).Seconds())); err != nil {
		fmt.Fprintf(e.stderr, "ferry proxy install-service: warning: Windows will not restart the service when it fails: %v\n", err)
	}
	logPath, _ := serviceLogPath()
	fmt.Fprintf(e.stdout, "installed service %s (automatic start): %s %s\nstart it with 'sc.exe start %s'; it logs to %s\n",
		serviceName, exe, strings.Join(sargs, " "), serviceName, logPath)
	return nil
}

// removeService stops the service if it runs and removes it.
func removeService(e *env, args []string) error {
	if len(args) > 0 {
		return usagef("remove-service takes no arguments")
	}
	m, err := connectSCM()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := m.OpenService(serviceName)
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return fmt.Errorf("no service %s is installed", serviceName)
	}
	if err != nil {
		return fmt.Errorf("open service %s: %w", serviceName, err)
	}
	defer s.Close()
	if st, err := s.Query(); err == nil && st.State != svc.Stopped {
		if _, err := s.Control(svc.Stop); err != nil && !errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
			return fmt.Errorf("stop service %s: %w", serviceName, err)
		}
		for deadline := time.Now().Add(3 * stopWait); ; time.Sleep(250 * time.Millisecond) {
			st, err := s.Query()
			if err != nil || st.State == svc.Stopped {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("service %s did not stop within %s", serviceName, 3*stopWait)
			}
		}
	}
	if err := s.Delete(); err != nil {
		return fmt.Errorf("remove service %s: %w", serviceName, err)
	}
	fmt.Fprintf(e.stdout, "removed service %s\n", serviceName)
	return nil
}

// connectSCM connects to the service control manager, which needs an
// administrator.
func connectSCM() (*mgr.Mgr, error) {
	m, err := mgr.Connect()
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
		return nil, fmt.Errorf("connect to the service control manager: %w (run it from an administrator's prompt)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to the service control manager: %w", err)
	}
	return m, nil
}

var _ svc.Handler = (*proxyService)(nil)
