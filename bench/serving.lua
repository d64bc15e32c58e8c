-- Load for bench/serving.py: POST to $BENCH_PATH (default /predict), cycling through the bodies
-- in $BENCH_BODIES (one JSON document a line), each with a random X-User-Id so that ab mode
-- assigns both variants.
-- done() prints one line, "BENCH {json}", that the harness parses.

local bodies = {}
local counter = 0
local path = os.getenv("BENCH_PATH") or "/predict"

function init(args)
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    bodies[#bodies + 1] = line
  end
  -- Each wrk thread gets its own sequence of user ids.
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

function request()
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-User-Id"] = tostring(math.random(1, 1000000)),
  }
  return wrk.format("POST", path, headers, bodies[(counter % #bodies) + 1])
end

function done(summary, latency, requests)
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
