-- wrk script for the sync workloads of deploy/bench (push, bulk, pull).
--
--   BENCH_TOKEN       access token, sent as "Authorization: Bearer ..."
--   BENCH_KIND        what request() builds:
--     get             the same GET every time (the URL given to wrk)
--     push            POST {"meals": [BENCH_NEW new meals]}
--     conflict        POST {"meals": [BENCH_NEW new meals, then BENCH_STALE
--                     meals from BENCH_POOL_FILE]}: ids the server holds
--                     (date 2024-03-01, updated_at 2024-03-01T10:00), sent
--                     with base_version 0, the same date, other data and an
--                     older updated_at: a concurrent edit that last write
--                     wins resolves server_wins, so the stored record never
--                     changes and the pool can be cycled forever
--     bulk            POST {<each of the five bulk keys>: [BENCH_NEW new
--                     records], "sync_token": BENCH_SYNC_TOKEN, "limit":
--                     BENCH_LIMIT}
--   BENCH_EXPECT      checks on every 2xx body, separated by ";": each is
--                     "TEXT" (must occur) or "N*TEXT" (must occur exactly N
--                     times), TEXT matched literally. Answers that fail a
--                     check are counted and reported by done() as
--                     "unexpected answers: N", which deploy/bench adds to
--                     the non-2xx column.
--
-- Every new record gets a fresh random v4 UUID (math.random, seeded per
-- thread from /dev/urandom), so a push never turns into a retry of an
-- earlier one. Headers given to wrk with -H (e.g. "Connection: close") are
-- sent too. With BENCH_LATENCY_FILE set, done() also appends the run's
-- latency distribution to it (bench.d/latency-dump.lua).

dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "latency-dump.lua")

local token = os.getenv("BENCH_TOKEN")
local kind = os.getenv("BENCH_KIND") or "get"
local new_count = tonumber(os.getenv("BENCH_NEW") or "0")
local stale_count = tonumber(os.getenv("BENCH_STALE") or "0")
local bulk_limit = tonumber(os.getenv("BENCH_LIMIT") or "100")
local sync_token = os.getenv("BENCH_SYNC_TOKEN")

local headers = {}
if token and token ~= "" then
   headers["Authorization"] = "Bearer " .. token
end

-- ------------------------------------------------------------- threads

local threads = {}
local thread_count = 0

function setup(thread)
   thread_count = thread_count + 1
   thread:set("thread_index", thread_count)
   table.insert(threads, thread)
end

local function urandom_seed()
   local file = io.open("/dev/urandom", "rb")
   if not file then
      return os.time() + math.floor(os.clock() * 1e6)
   end
   local bytes = file:read(4)
   file:close()
   local seed = 0
   for i = 1, 4 do
      seed = seed * 256 + bytes:byte(i)
   end
   return seed
end

-- ------------------------------------------------------------- records

local hex = "0123456789abcdef"
local variant = "89ab"

local function hex_digits(count)
   local out = {}
   for i = 1, count do
      local n = math.random(1, 16)
      out[i] = hex:sub(n, n)
   end
   return table.concat(out)
end

-- A random v4 UUID: 122 random bits, version 4, variant 10.
local function uuid4()
   local v = math.random(1, 4)
   return hex_digits(8) .. "-" .. hex_digits(4) .. "-4" .. hex_digits(3) .. "-"
      .. variant:sub(v, v) .. hex_digits(3) .. "-" .. hex_digits(12)
end

-- Small realistic data of each entity, about 200 bytes as compact JSON;
-- %d is a number that varies per record.
local templates = {
   meals = {
      '{"date":"2024-02-%02d","mealType":"lunch","name":"Grilled chicken salad with quinoa","calories":%d,"protein":38.5,"carbs":42.1,"fat":18.3,"fiber":6.2,"notes":"home cooked","source":"manual"}',
      '{"date":"2024-02-%02d","mealType":"dinner","name":"Salmon, brown rice and steamed broccoli","calories":%d,"protein":41.0,"carbs":58.2,"fat":22.7,"fiber":7.9,"notes":"restaurant","source":"manual"}',
   },
   exercises = {
      '{"date":"2024-02-%02d","type":"running","durationMinutes":42,"caloriesBurned":%d,"distanceKm":7.4,"avgHeartRate":148,"notes":"felt good, steady pace","source":"watch"}',
   },
   health_metrics = {
      '{"date":"2024-02-%02d","type":"vitals","weightKg":78.4,"systolic":%d,"diastolic":79,"heartRate":61,"sleepHours":7.2,"notes":"morning, before coffee","source":"smart scale"}',
   },
   medications = {
      '{"name":"Metformin","dosage":"500 mg","frequency":"twice daily","startDate":"2024-02-%02d","dosesTaken":%d,"active":true,"sideEffects":["mild nausea"],"prescribedBy":"Dr. Okafor","reminder":"08:00"}',
   },
   meal_plans = {
      '{"name":"Week plan","weekStart":"2024-02-%02d","targetCalories":%d,"days":[{"day":"mon","meals":["oatmeal","chicken salad","salmon"]},{"day":"tue","meals":["yogurt","lentil soup","stir fry"]}]}',
   },
}

local function new_record(key)
   local list = templates[key]
   local data = string.format(list[math.random(1, #list)], math.random(1, 28), math.random(150, 900))
   return '{"id":"' .. uuid4() .. '","data":' .. data .. ',"updated_at":"2024-03-01T10:00:00.000Z"}'
end

-- A meal the server holds, sent again as a stale concurrent edit.
local function stale_meal(id)
   return '{"id":"' .. id .. '","base_version":0,"data":{"date":"2024-03-01","mealType":"lunch",'
      .. '"name":"Grilled chicken salad (edited offline)","calories":' .. math.random(300, 700)
      .. ',"protein":35.0,"carbs":40.0,"fat":17.0,"fiber":6.0,"notes":"edited offline","source":"manual"},'
      .. '"updated_at":"2024-02-01T10:00:00.000Z"}'
end

local pool = {}
local pool_next = 1

local function new_list(key, count, out)
   for _ = 1, count do
      out[#out + 1] = new_record(key)
   end
   return out
end

local function push_body()
   local records = new_list("meals", new_count, {})
   for _ = 1, stale_count do
      records[#records + 1] = stale_meal(pool[pool_next])
      pool_next = pool_next % #pool + 1
   end
   return '{"meals":[' .. table.concat(records, ",") .. "]}"
end

local bulk_keys = { "health_metrics", "medications", "meals", "exercises", "meal_plans" }

local function bulk_body()
   local parts = {}
   for _, key in ipairs(bulk_keys) do
      parts[#parts + 1] = '"' .. key .. '":[' .. table.concat(new_list(key, new_count, {}), ",") .. "]"
   end
   if sync_token and sync_token ~= "" then
      parts[#parts + 1] = '"sync_token":"' .. sync_token .. '"'
   end
   parts[#parts + 1] = '"limit":' .. bulk_limit
   return "{" .. table.concat(parts, ",") .. "}"
end

-- ------------------------------------------------------------- requests

function init(args)
   math.randomseed(urandom_seed() + (thread_index or 0) * 7919)
   if kind == "conflict" then
      local file = assert(io.open(assert(os.getenv("BENCH_POOL_FILE"), "BENCH_POOL_FILE"), "r"))
      for line in file:lines() do
         if line ~= "" then
            pool[#pool + 1] = line
         end
      end
      file:close()
      assert(#pool >= stale_count, "pool smaller than BENCH_STALE")
      -- Threads start at different places in the pool.
      pool_next = ((thread_index or 1) - 1) * math.floor(#pool / 2) % #pool + 1
   end
   if kind ~= "get" then
      headers["Content-Type"] = "application/json"
   end
   -- wrk.format() sends only the headers it is given: add wrk's own (-H).
   for name, value in pairs(wrk.headers) do
      if headers[name] == nil then
         headers[name] = value
      end
   end
end

function request()
   if kind == "push" or kind == "conflict" then
      return wrk.format("POST", nil, headers, push_body())
   elseif kind == "bulk" then
      return wrk.format("POST", nil, headers, bulk_body())
   end
   return wrk.format("GET", nil, headers, nil)
end

-- ------------------------------------------------------------- checks

local checks = {}
for spec in string.gmatch(os.getenv("BENCH_EXPECT") or "", "[^;]+") do
   local count, text = spec:match("^(%d+)%*(.+)$")
   if count then
      checks[#checks + 1] = { text = text, count = tonumber(count) }
   else
      checks[#checks + 1] = { text = spec }
   end
end

local function occurrences(body, text)
   local n, position = 0, 1
   while true do
      local first, last = body:find(text, position, true)
      if not first then
         return n
      end
      n = n + 1
      position = last + 1
   end
end

local function check(body)
   for _, c in ipairs(checks) do
      local n = occurrences(body, c.text)
      if (c.count and n ~= c.count) or (not c.count and n == 0) then
         return c
      end
   end
   return nil
end

unexpected = 0
local shown = false

function response(status, headers, body)
   if status >= 300 then
      if not shown then
         shown = true
         io.stderr:write("first non-2xx answer: " .. status .. " " .. body:sub(1, 300) .. "\n")
      end
      return
   end
   local failed = check(body)
   if failed then
      unexpected = unexpected + 1
      if not shown then
         shown = true
         io.stderr:write("first unexpected answer (check '" .. (failed.count and failed.count .. "*" or "")
            .. failed.text .. "'): " .. body:sub(1, 300) .. "\n")
      end
   end
end

function done(summary, latency, requests)
   local total = 0
   for _, thread in ipairs(threads) do
      total = total + (tonumber(thread:get("unexpected")) or 0)
   end
   io.write("unexpected answers: " .. total .. "\n")
   write_latency_dump(summary, latency, total)
end
