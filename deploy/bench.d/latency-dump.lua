-- wrk script: a run's latency distribution, for deploy/bench --compare.
--
--   BENCH_LATENCY_FILE  file the run is appended to (nothing is written
--                       when it is unset or empty)
--
-- Used alone as the script of a row that has no other, and loaded by the
-- other scripts of bench.d (their done() calls write_latency_dump). Each
-- run appends
--   run REQUESTS DURATION_US NON_2XX SOCKET_ERRORS UNEXPECTED
-- then one line `LATENCY_US COUNT` per distinct latency of wrk's histogram.
-- That histogram includes wrk's correction for coordinated omission, so the
-- percentiles of several runs' merged lines are what wrk itself would have
-- printed for one long run (bench.d/compare.py merges them).

function write_latency_dump(summary, latency, unexpected)
   local path = os.getenv("BENCH_LATENCY_FILE")
   if not path or path == "" then
      return
   end
   local file = assert(io.open(path, "a"))
   local errors = summary.errors
   file:write(string.format("run %d %d %d %d %d\n", summary.requests, summary.duration, errors.status,
      errors.connect + errors.read + errors.write + errors.timeout, unexpected or 0))
   for i = 1, #latency do
      local value, count = latency(i)
      file:write(string.format("%d %d\n", value, count))
   end
   file:close()
end

function done(summary, latency, requests)
   write_latency_dump(summary, latency, 0)
end
