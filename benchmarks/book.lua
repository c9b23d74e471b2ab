-- wrk: POST a booking per request, walking through the plan of BENCH_PLAN.
-- At the end it prints the latency percentiles and how many answers had each status, summed
-- over wrk's threads (each thread counts its own; the main thread reads them in done()).
local counter = 0
local ids = 0
-- thread_id is a global: setup() sets it in each thread's own Lua state (thread:set), and a
-- local of the same name here would hide it (every thread would send the same requests)
local threads = {}

function setup(thread)
  ids = ids + 1
  thread:set("thread_id", ids)
  table.insert(threads, thread)
end

-- BENCH_PLAN: a line "P G S", then P tokens, then G groups of S session ids. Request i is
-- patient i % P in group (i // P) % G at the group's session (i % P) % S; each thread starts
-- at its own share of the P * G requests, so no two threads repeat a request.
local tokens, sessions, P, G, S = {}, {}, 0, 0, 0

function init(args)
  local k = 0
  for line in io.lines(os.getenv("BENCH_PLAN")) do
    if k == 0 then
      P, G, S = line:match("^(%d+) (%d+) (%d+)$")
      P, G, S = tonumber(P), tonumber(G), tonumber(S)
    elseif k <= P then
      tokens[k] = line
    else
      sessions[k - P] = line
    end
    k = k + 1
  end
  local threads_n = tonumber(os.getenv("BENCH_THREADS") or "1")
  counter = (thread_id - 1) * math.floor(P * G / threads_n)
end

function request()
  local i = counter
  counter = counter + 1
  local p = i % P
  local g = math.floor(i / P) % G
  local session = sessions[g * S + (p % S) + 1]
  local body = '{"request_id":"w' .. thread_id .. '-' .. i .. '"}'
  return wrk.format("POST", "/v1/sessions/" .. session .. "/bookings",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. tokens[p + 1] }, body)
end

statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(total) do
    table.insert(parts, status .. "=" .. count)
  end
  io.write(string.format("LATENCY p50=%d p99=%d\n", latency:percentile(50), latency:percentile(99)))
  io.write(string.format("DURATION us=%d\n", summary.duration))
  io.write("STATUS " .. table.concat(parts, " ") .. "\n")
end
