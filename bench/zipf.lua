-- wrk script of bench/cache.sh: GETs the paths listed in a file (one per line), drawn
-- from a Zipf distribution (path k with weight 1/k^s), and prints the same BENCH line
-- as wrk-report.lua. Arguments after `--`: FILE [S=1.0] [SEED].
local paths, cdf = {}, {}

init = function(args)
  local s = tonumber(args[2] or "1.0")
  for line in io.lines(args[1]) do
    if line ~= "" then paths[#paths + 1] = line end
  end
  local total = 0
  for k = 1, #paths do
    total = total + 1 / k ^ s
    cdf[k] = total
  end
  for k = 1, #paths do cdf[k] = cdf[k] / total end
  math.randomseed(tonumber(args[3] or "1"))
end

request = function()
  local u, lo, hi = math.random(), 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", paths[lo])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d errors=%d connect=%d read=%d write=%d status=%d timeout=%d p50=%d p99=%d p999=%d max=%d\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
