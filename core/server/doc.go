// Package server is ferry's control plane as a service: it runs the jobs
// of a configuration at their schedules with the same engine `ferry run`
// uses, and watches their RPO.
//
// Each job with a schedule runs when the schedule makes it due
// (scheduler.Schedule.Next). One session of a job runs at a time: a run
// that falls due while the job's last session still runs is queued once,
// never stacked, and starts when that session ends (a run that falls due
// while the job's run waits for a slot is that run). At most
// Options.MaxSessions sessions run at once, of all jobs; a run that falls
// due while every slot is taken waits for one and says so. A run that fell
// due while no server ran (the server was down, or killed) runs once at
// start, whatever the number of runs missed, unless Options.SkipMissed.
// The schedule's state needs nothing but the catalog: the time of each
// job's last session, and the runs the server owes. A run queued, asked
// (RunNow) or waiting for a slot is recorded in the catalog
// (catalog.QueueRun) before the server answers, and forgotten when its
// session begins; the next server runs each once at start, in the order
// they were queued, before the missed runs (a job both owed and missed
// runs once). Slots go to the runs waiting for one in the order they
// began to wait.
//
// Reload takes a changed configuration: a job gone from it is not
// scheduled any more (a session of it that runs ends as it would), a new
// one is scheduled, a changed schedule applies from now. When Serve's
// context ends, no session starts and the running ones stop as Ctrl-C
// stops `ferry run`: earlier restore points intact, the next run resumes.
//
// A job's `rpo` is checked after each session and every minute: for each
// VM of the job, the age of its newest restore point in the catalog (a VM
// without one counts from when the server started); an alarm is raised
// when the age exceeds the RPO and cleared when a newer point arrives.
//
// A failover plan with a test_schedule is tested when it falls due, as
// POST /v1/failover-plans/{name}/test would (TestPlan): one test of a
// plan at a time (one due while another runs is skipped, never queued),
// claiming no job; a test missed while no server ran runs once at start
// unless Options.SkipMissed. Tested hears each test's end (webhooks); the
// metrics read each plan's last test from the catalog.
//
// Failovers and failbacks asked through the API (of a VM or of a failover
// plan) hold the jobs they act on: no session of them begins meanwhile,
// and they are refused while one runs; a failback also holds the jobs in
// the catalog (HoldJobs), so that a `ferry failback` or `ferry run`
// elsewhere is refused too. They run under the server's context, not the
// request's.
//
// The server never decides what a session does: the Runner (the engine)
// does. It never reads the clock but through the time package, so tests
// run it in a synctest bubble.
package server
