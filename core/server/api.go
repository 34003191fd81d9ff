package server

import (
	_ "embed"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferry-dr/ferry/core/failback"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Handler is the server's HTTP API (docs/server.md; described by the
// OpenAPI document it serves at /v1/openapi.json): JSON under /v1/, the
// metrics at /metrics. Who may call it is Authorize's business.
func (s *Server) Handler(m *Metrics, version string) http.Handler {
	mux := http.NewServeMux()
	for _, r := range s.routes(m, version) {
		mux.HandleFunc(r.method+" "+r.path, r.handle)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such resource: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// route is one operation of the API.
type route struct {
	method, path string
	handle       http.HandlerFunc
}

//go:embed openapi.json
var openAPI []byte

func (s *Server) routes(m *Metrics, version string) []route {
	metrics := promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
	return []route{
		{"GET", "/v1/health", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": version})
		}},
		{"GET", "/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(openAPI)
		}},
		{"GET", "/v1/jobs", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, s.Jobs())
		}},
		{"GET", "/v1/jobs/{name}", func(w http.ResponseWriter, r *http.Request) {
			j, ok := s.Job(r.PathValue("name"))
			if !ok {
				writeNoJob(w, r.PathValue("name"))
				return
			}
			writeJSON(w, http.StatusOK, j)
		}},
		{"POST", "/v1/jobs/{name}/run", func(w http.ResponseWriter, r *http.Request) {
			asked, err := s.RunNow(r.Context(), r.PathValue("name"))
			if err != nil {
				// An unknown job, a server that stops, or a run that ended
				// before its session began.
				writeActionError(w, err, nil)
				return
			}
			writeJSON(w, http.StatusAccepted, asked)
		}},
		{"GET", "/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
			limit := 20
			if v := r.URL.Query().Get("limit"); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 1000 {
					writeError(w, http.StatusBadRequest, "invalid_argument", "limit must be a number from 1 to 1000")
					return
				}
				limit = n
			}
			sessions, err := s.cat.Sessions(r.URL.Query().Get("job"), limit)
			writeList(w, sessions, err)
		}},
		{"GET", "/v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
			sess, err := s.cat.Session(r.PathValue("id"))
			if err != nil {
				writeCatalogError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, sess)
		}},
		{"GET", "/v1/jobs/{name}/replicas", func(w http.ResponseWriter, r *http.Request) {
			if _, ok := s.Job(r.PathValue("name")); !ok {
				writeNoJob(w, r.PathValue("name"))
				return
			}
			replicas, err := s.cat.Replicas(r.PathValue("name"))
			writeList(w, replicas, err)
		}},
		{"GET", "/v1/jobs/{name}/vms/{vm}/points", func(w http.ResponseWriter, r *http.Request) {
			if _, ok := s.Job(r.PathValue("name")); !ok {
				writeNoJob(w, r.PathValue("name"))
				return
			}
			points, err := s.cat.RestorePoints(r.PathValue("name"), r.PathValue("vm"))
			writeList(w, points, err)
		}},
		{"POST", "/v1/jobs/{name}/vms/{vm}/failover", s.failoverHandler("start")},
		{"POST", "/v1/jobs/{name}/vms/{vm}/failover/undo", s.failoverHandler("undo")},
		{"POST", "/v1/jobs/{name}/vms/{vm}/failover/commit", s.failoverHandler("commit")},
		{"GET", "/v1/events", s.watch},
		{"GET", "/v1/rpo", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, s.RPO())
		}},
		{"GET", "/metrics", metrics.ServeHTTP},
		{"GET", "/v1/status", s.statusHandler},
		{"GET", "/v1/jobs/{name}/points", s.pointsHandler},
		{"GET", "/v1/jobs/{name}/replicas/gone", s.goneHandler},
		{"GET", "/v1/plan", s.planHandler},
		{"GET", "/v1/failover-plans", s.failoverPlansHandler},
		{"GET", "/v1/failover-plans/{name}", s.failoverPlanHandler},
		{"POST", "/v1/failover-plans/{name}/failover", s.failoverPlanAction("failover")},
		{"POST", "/v1/failover-plans/{name}/undo", s.failoverPlanAction("undo")},
		{"POST", "/v1/failover-plans/{name}/commit", s.failoverPlanAction("commit")},
		{"POST", "/v1/failover-plans/{name}/test", s.failoverPlanTest},
		{"POST", "/v1/failover-plans/{name}/test/cleanup", s.planTestCleanup},
		{"POST", "/v1/jobs/{name}/vms/{vm}/test", s.vmTest},
		{"POST", "/v1/jobs/{name}/vms/{vm}/test/cleanup", s.vmTestCleanup},
		{"POST", "/v1/jobs/{name}/vms/{vm}/failback", s.failbackHandler(failback.Sync)},
		{"POST", "/v1/jobs/{name}/vms/{vm}/failback/switch", s.failbackHandler(failback.Switch)},
		{"POST", "/v1/jobs/{name}/vms/{vm}/failback/commit", s.failbackHandler(failback.Commit)},
		{"POST", "/v1/jobs/{name}/vms/{vm}/failback/undo", s.failbackHandler(failback.Undo)},
		{"GET", "/v1/failbacks", s.failbacksHandler},
		{"POST", "/v1/failover-plans/{name}/failback", s.failbackPlanAction(failback.Sync)},
		{"POST", "/v1/failover-plans/{name}/failback/switch", s.failbackPlanAction(failback.Switch)},
		{"POST", "/v1/failover-plans/{name}/failback/commit", s.failbackPlanAction(failback.Commit)},
		{"POST", "/v1/failover-plans/{name}/failback/undo", s.failbackPlanAction(failback.Undo)},
	}
}

// failoverHandler answers a failover action; a start may name its point
// in the body, {"point": "ID or a start of it"}.
func (s *Server) failoverHandler(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Point string `json:"point"`
		}
		if r.ContentLength != 0 {
			if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
				writeError(w, http.StatusBadRequest, "invalid_argument", "the body is not a JSON object such as {\"point\": \"...\"}: "+err.Error())
				return
			}
		}
		res, err := s.failover(r.PathValue("name"), r.PathValue("vm"), action, body.Point)
		if err != nil {
			writeActionError(w, err, nil)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}

// writeActionError answers the error of an action (a failover, a run
// that ended before its session began, a failover plan) with the status
// of its class, and what the action did before it failed when it says
// (result; nil for nothing).
func writeActionError(w http.ResponseWriter, err error, result any) {
	code, class := http.StatusInternalServerError, "internal"
	switch {
	case errors.Is(err, ErrUnknownJob), errors.Is(err, errdefs.ErrNotFound):
		code, class = http.StatusNotFound, "not_found"
	case errors.Is(err, ErrBusy), errors.Is(err, errdefs.ErrFailedPrecondition):
		code, class = http.StatusConflict, "failed_precondition"
	case errors.Is(err, errdefs.ErrInvalidArgument):
		code, class = http.StatusBadRequest, "invalid_argument"
	case errors.Is(err, errdefs.ErrUnavailable):
		code, class = http.StatusServiceUnavailable, "unavailable"
	}
	writeJSON(w, code, apiError{Error: err.Error(), Class: class, Result: result})
}

// apiError is the body of every error the API answers.
type apiError struct {
	Error string `json:"error"`
	// Class is the error's class, as the CLI's exit codes know them:
	// not_found, invalid_argument, failed_precondition, unavailable,
	// internal.
	Class string `json:"class"`
	// Result is what an action did before it failed, for the actions
	// that say (a failover plan: its VMs, started or failed, and steps).
	Result any `json:"result,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away: nothing to tell it
}

func writeError(w http.ResponseWriter, code int, class, msg string) {
	writeJSON(w, code, apiError{Error: msg, Class: class})
}

// writeList answers a list read from the catalog: [] rather than null
// when it is empty, or the error.
func writeList[T any](w http.ResponseWriter, items []T, err error) {
	if err != nil {
		writeCatalogError(w, err)
		return
	}
	if items == nil {
		items = []T{}
	}
	writeJSON(w, http.StatusOK, items)
}

// writeNoJob answers a job the configuration lacks.
func writeNoJob(w http.ResponseWriter, name string) {
	writeError(w, http.StatusNotFound, "not_found", "no job "+strconv.Quote(name))
}

func writeCatalogError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, errdefs.ErrInvalidArgument):
		writeError(w, http.StatusBadRequest, "invalid_argument", err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}
