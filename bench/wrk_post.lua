-- wrk script for the benchmark cells (bench/wrk.py writes its configuration and reads its output).
--
-- The configuration is a Lua file named by $WRK_BENCH_CONFIG that returns a table:
--   bodies        paths of the request bodies, POSTed in turn (headers come from wrk's -H)
--   duration_s    stop issuing after this many seconds (from the first request)
--   max_requests  ... or after this many requests, whichever comes first
--   drain_s       then wait at most this long for the requests in flight
--   sample_key    optional: every sample_every-th 2xx JSON answer, the numbers of this object
--   sample_every     (e.g. "timings_ms") are averaged
--   out           where done() writes the results as JSON
--
-- The cell has the semantics of bench/loadgen.py's closed loop: when the issuing window closes,
-- connections are parked (delay() returns a very long delay), the requests in flight are
-- answered and counted, then the thread stops itself and interrupts wrk's main thread (SIGINT),
-- which ends the run. Throughput is successful answers over the span from the first request sent
-- to the last answer received (LuaJIT's FFI reads CLOCK_MONOTONIC). One wrk thread only.
--
-- Latency percentiles come from wrk's histogram (microsecond bins, every answer whatever its
-- status). wrk "corrects" the histogram for coordinated omission before done() sees it (it adds
-- synthetic samples below every value over twice the mean interval per connection); this script
-- inverts that correction to report the latencies as measured ("latency_us"), and reports wrk's
-- corrected ones too ("latency_us_corrected").

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
int kill(int pid, int sig);
int getpid(void);
]]

local CLOCK_MONOTONIC = 1
local SIGINT = 2
local PARKED_MS = 1e9
local ts = ffi.new("bench_timespec")

local function now()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
   return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local config = dofile(os.getenv("WRK_BENCH_CONFIG"))

-- Per-thread state (read back in done() through thread:get).
requests = {}
issued = 0
written = 0 -- requests written: issued ones, and wrk's own re-sends after a connection failed under one
answered = 0
ok = 0
ok_bytes = 0
statuses = {}
first_sent = -1
last_answer = -1
closed = false
finished = false
sample_sums = {}
sample_count = 0

local index = 0
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   for i, path in ipairs(config.bodies) do
      local file = assert(io.open(path, "rb"))
      local body = file:read("*a")
      file:close()
      requests[i] = wrk.format("POST", nil, nil, body)
   end
end

local function finish()
   if not finished then
      finished = true
      wrk.thread:stop()
      ffi.C.kill(ffi.C.getpid(), SIGINT)
   end
end

local function maybe_finish(t)
   if closed and (answered >= issued or t - first_sent >= config.duration_s + config.drain_s) then
      finish()
   end
end

function delay()
   local t = now()
   if first_sent < 0 then
      first_sent = t
   end
   if not closed and (issued >= config.max_requests or t - first_sent >= config.duration_s) then
      closed = true
   end
   if closed then
      maybe_finish(t)
      return PARKED_MS
   end
   issued = issued + 1
   return 0
end

function request()
   if first_sent < 0 then
      return requests[1] -- wrk checks the script's request once before the run: not a request sent
   end
   written = written + 1
   index = index % #requests + 1
   return requests[index]
end

local function sample(body)
   local key = '"' .. config.sample_key .. '"'
   local at = string.find(body, key, 1, true)
   if not at then
      return
   end
   local object = string.match(body, "^%s*:%s*(%b{})", at + #key)
   if not object then
      return
   end
   sample_count = sample_count + 1
   for name, value in string.gmatch(object, '"([^"]+)"%s*:%s*(-?[%d.]+[eE]?[-+]?%d*)') do
      local number = tonumber(value)
      if number then
         sample_sums[name] = (sample_sums[name] or 0) + number
      end
   end
end

function response(status, headers, body)
   local t = now()
   answered = answered + 1
   last_answer = t
   statuses[status] = (statuses[status] or 0) + 1
   if status >= 200 and status < 300 then
      ok = ok + 1
      ok_bytes = ok_bytes + #body
      if config.sample_key and (ok - 1) % config.sample_every == 0 then
         sample(body)
      end
   end
   maybe_finish(t)
end

-- ------------------------------------------------------------------------------------ done()

local function histogram(latency)
   -- The payload of wrk's stats userdata is a pointer to its struct:
   -- { uint64 count, limit, min, max; uint64 data[limit] } (src/stats.h).
   local s = ffi.cast("uint64_t **", latency)[0]
   return s, tonumber(s[2]), tonumber(s[3])
end

local function counts_of(s, low, high, interval)
   -- A function n -> count of bin n. With interval > 0, the counts as measured: wrk's
   -- stats_correct(interval) adds the count of every bin n >= 2*interval to the bins
   -- n - interval, n - 2*interval, ... while above interval; undone from the top down with
   -- chain[n] = measured[n] + chain[n + interval].
   if interval <= 0 then
      return function(n) return tonumber(s[4 + n]) end
   end
   local chain = ffi.new("double[?]", high - low + 1)
   for n = high, low, -1 do
      local above = n + interval
      local rest = above <= high and chain[above - low] or 0
      local measured = tonumber(s[4 + n])
      if n > interval then
         measured = measured - rest
      end
      chain[n - low] = measured + rest
   end
   return function(n)
      local above = n + interval
      return chain[n - low] - (above <= high and chain[above - low] or 0)
   end
end

local function summarize(count, low, high)
   local total, sum, lo, hi = 0, 0, nil, nil
   for n = low, high do
      local c = count(n)
      if c > 0 then
         total = total + c
         sum = sum + c * n
         lo = lo or n
         hi = n
      end
   end
   if total == 0 then
      return nil
   end
   local mean = sum / total
   local out = { count = total, mean = mean, min = lo, max = hi }
   local var, seen = 0, 0
   local wanted = { 50, 90, 95, 99 }
   local next_p = 1
   for n = lo, hi do
      local c = count(n)
      if c > 0 then
         var = var + c * (n - mean) ^ 2
         seen = seen + c
         while next_p <= #wanted and seen >= math.max(1, math.ceil(wanted[next_p] / 100 * total)) do
            out["p" .. wanted[next_p]] = n
            next_p = next_p + 1
         end
      end
   end
   out.stdev = total > 1 and math.sqrt(var / (total - 1)) or 0
   return out
end

local function json(value)
   local kind = type(value)
   if kind == "table" then
      local parts = {}
      for k, v in pairs(value) do
         parts[#parts + 1] = json(tostring(k)) .. ":" .. json(v)
      end
      return "{" .. table.concat(parts, ",") .. "}"
   elseif kind == "string" then
      return '"' .. value:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
   elseif kind == "number" then
      if value ~= value or value == math.huge or value == -math.huge then
         return "null"
      end
      return string.format("%.17g", value)
   elseif kind == "boolean" then
      return tostring(value)
   end
   return "null"
end

function done(summary, latency, requests_stats)
   local cpu_start = os.clock()
   local out = {
      threads = #threads, connections = config.connections, duration_us = summary.duration,
      complete = summary.requests, bytes = summary.bytes, errors = summary.errors,
      issued = 0, written = 0, answered = 0, ok = 0, ok_bytes = 0, statuses = {}, sample_count = 0, samples = {},
   }
   local first, last = math.huge, -math.huge
   for _, thread in ipairs(threads) do
      for _, name in ipairs({ "issued", "written", "answered", "ok", "ok_bytes", "sample_count" }) do
         out[name] = out[name] + thread:get(name)
      end
      for status, count in pairs(thread:get("statuses")) do
         out.statuses[status] = (out.statuses[status] or 0) + count
      end
      for name, total in pairs(thread:get("sample_sums")) do
         out.samples[name] = (out.samples[name] or 0) + total
      end
      local sent, answer = thread:get("first_sent"), thread:get("last_answer")
      if sent >= 0 then first = math.min(first, sent) end
      if answer >= 0 then last = math.max(last, answer) end
   end
   out.span_s = (last > first) and (last - first) or 0
   local s, low, high = histogram(latency)
   if summary.requests > 0 and high >= low then
      local per_connection = math.floor(summary.requests / config.connections)
      local interval = per_connection > 0 and math.floor(summary.duration / per_connection) or 0
      out.correction_interval_us = interval
      out.latency_us = summarize(counts_of(s, low, high, interval), low, high)
      out.latency_us_corrected = summarize(counts_of(s, low, high, 0), low, high)
   end
   out.done_cpu_s = os.clock() - cpu_start
   local file = assert(io.open(config.out, "w"))
   file:write(json(out), "\n")
   file:close()
end
