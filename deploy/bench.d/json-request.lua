-- wrk script for workloads that send an authenticated JSON request.
--
--   BENCH_METHOD     request method (default GET)
--   BENCH_TOKEN      access token, sent as "Authorization: Bearer ..."
--   BENCH_BODY_FILE  file whose bytes are the body (sent as application/json)
--
-- A workload function exports these and passes
-- `-s "$BENCH_D/json-request.lua"` to measure; every request is the same,
-- so the server does the same work each time (e.g. a push of records that
-- are already stored is a retry: it reads, compares and writes nothing).

-- done(): the run's latency distribution for deploy/bench --compare.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "latency-dump.lua")

wrk.method = os.getenv("BENCH_METHOD") or "GET"

local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
   wrk.headers["Authorization"] = "Bearer " .. token
end

local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
   local file = assert(io.open(body_file, "rb"))
   wrk.body = file:read("*a")
   file:close()
   wrk.headers["Content-Type"] = "application/json"
end

-- Non-2xx answers are counted by wrk itself; print the first one so a
-- misconfigured workload shows why instead of a fast table of errors.
local shown = false
function response(status, headers, body)
   if status >= 300 and not shown then
      shown = true
      io.stderr:write("first non-2xx answer: " .. status .. " " .. body:sub(1, 300) .. "\n")
   end
end
