-- wrk: POST a booking per request, rotating through "session token" lines of BENCH_PLAN.
local lines, n, counter = {}, 0, 0
local thread_id = 0
local ids = 0

function setup(thread)
  ids = ids + 1
  thread:set("thread_id", ids)
end

function init(args)
  for line in io.lines(os.getenv("BENCH_PLAN")) do
    local session, token = line:match("^(%S+) (%S+)$")
    n = n + 1
    lines[n] = { session, token }
  end
  counter = thread_id * 1000003
end

function request()
  counter = counter + 1
  local item = lines[(counter % n) + 1]
  local body = '{"request_id":"w' .. thread_id .. '-' .. counter .. '"}'
  return wrk.format("POST", "/v1/sessions/" .. item[1] .. "/bookings",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. item[2] }, body)
end

responses = {}
function response(status, headers, body)
  responses[status] = (responses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("LATENCY p50=%d p99=%d\n", latency:percentile(50), latency:percentile(99)))
end
