-- POST /items with one fixed body; counts the answers by status over all threads and writes
-- them ("status 201 1234") with the latency percentiles ("p99 12.3"; p100, the slowest), for
-- sqlite_workers.py.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"name": "Lamp", "price_cents": 100, "owner_id": 1}'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      io.write(string.format("status %d %d\n", status, count))
    end
  end
  for _, p in ipairs({50, 99}) do
    io.write(string.format("p%d %.1f\n", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("p100 %.1f\n", latency.max / 1000))
end
