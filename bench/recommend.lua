-- wrk script: POST /recommend over many different known customers, JSON summary at the end.
-- Each wrk thread walks its own share of the ids (thread i of n takes ids i, i+n, i+2n, ...), so a run
-- shorter than the list asks for every customer at most once: no answer can come from a cache.
local ids = {}
for line in io.lines(os.getenv("CUSTOMER_IDS_FILE")) do ids[#ids + 1] = line end
local threads = tonumber(os.getenv("WRK_THREADS") or "1")
local started = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if os.getenv("API_KEY") then wrk.headers["X-API-Key"] = os.getenv("API_KEY") end

setup = function(thread)
  thread:set("offset", started)
  started = started + 1
end

local counter = 0
request = function()
  local id = ids[((counter * threads + (offset or 0)) % #ids) + 1]
  counter = counter + 1
  return wrk.format(nil, "/recommend", nil, '{"customer_id": "' .. id .. '", "top_k": 5, "include_explanation": true}')
end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout
  io.write(string.format('JSON{"requests": %d, "seconds": %.3f, "errors": %d, "non_2xx": %d, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, errors, summary.errors.status, latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000))
end
