// Package scheduler decides when replication jobs run and where their
// per-disk tasks go.
//
// Parse reads a job's schedule: a five-field cron expression (minute, hour,
// day of month, month, day of week, with Vixie cron's rules), a macro such
// as @daily, or "every <duration>". Schedule.Next answers the one question
// the control plane asks: when is the first run strictly after a given
// instant. Cron schedules are evaluated on the wall clock of their time zone
// and behave predictably across daylight saving changes; every schedules are
// anchored to the Unix epoch so their runs do not move when the control
// plane restarts.
//
// Place is the pure placement step of a session: it assigns per-disk tasks
// to proxies' free task slots and says which tasks must wait.
//
// Everything here is a pure function of its arguments. This package must
// never read the clock, sleep, start goroutines, dispatch tasks or talk to
// proxies or plugins: the callers do that with the answers it gives.
package scheduler
