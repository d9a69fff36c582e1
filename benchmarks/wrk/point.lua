-- What every benchmark script shares: a per-thread random seed, the parameters the driver
-- passes after `--` (wrk_driver.py), and one machine-readable RESULT line at the end.
-- Each route's script requires this first, then defines `request`; the driver puts this
-- folder on LUA_PATH.
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("number", counter)
end

-- name=value pairs, numbers where they parse, so the route scripts read params.items etc.
params = {}
init = function(args)
  for _, pair in ipairs(args) do
    local name, value = pair:match("^([%w_]+)=(.*)$")
    params[name] = tonumber(value) or value
  end
  -- Each thread its own seed, so threads do not send the same sequence.
  math.randomseed(params.seed + number)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nRESULT {"requests": %d, "microseconds": %d, "non2xx": %d, "socket_errors": %d, '
    .. '"timeouts": %d, "p50": %d, "p99": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
