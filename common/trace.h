/* trace.h: span tracing for `launch profile`. When the environment variable OFA_TRACE
 * names a folder, each process appends one JSON line per span to OFA_TRACE/<proc>.jsonl:
 *
 *     {"name":"work","ts":1795541071395123,"dur":412,"pid":1622,"task":"caption"}
 *
 * (ts: wall-clock microseconds, so that processes of one host, or hosts with synchronised
 * clocks, line up; dur: microseconds). launch merges the files into a Chrome trace-event
 * file (launch/profile.c). Without OFA_TRACE every call is one test of a static flag:
 * the hot loops of the stages keep their calls in place at no measurable cost.
 *
 * Usage, in a process's main or loop:
 *
 *     trace_open(a.id);                      // once; no-op when OFA_TRACE is unset
 *     double t0 = trace_now();               // 0 when tracing is off
 *     ... receive / work / send ...
 *     trace_span("work", t0, task);          // task may be NULL
 *     trace_close();                         // at exit (also flushed once a second)
 *
 * The state is per process (one global), not thread-safe: spans are recorded by the
 * thread that runs the poll loop. A span file holds at most OFA_TRACE_MAX spans
 * (default 200000) so that a long profile cannot fill the disk. */
#ifndef OFA_TRACE_H
#define OFA_TRACE_H

#include <stdbool.h>

/* Open OFA_TRACE/<proc>.jsonl for appending (a restarted process appends to the file of
 * its earlier incarnation; each line carries the OS pid). Returns 0 when tracing is on,
 * 1 when it is off (OFA_TRACE unset or empty), -1 when the file cannot be opened (a
 * message goes to stderr and tracing stays off: tracing never stops a process). */
int trace_open(const char *proc);

/* Whether spans are being recorded. */
bool trace_enabled(void);

/* The start of a span: monotonic seconds, or 0 when tracing is off. */
double trace_now(void);

/* Record the span NAME from t0 (a trace_now() value) to now. task (may be NULL) is kept
 * as an argument of the span. Does nothing when tracing is off or t0 is 0. */
void trace_span(const char *name, double t0, const char *task);

/* Same, with an integer argument (e.g. the trainer's step, a count of messages). */
void trace_span_n(const char *name, double t0, const char *task, const char *key,
                  long long value);

/* Flush and close the span file. */
void trace_close(void);

#endif
