-- wrk script: GET /api/test?k=N, N ~ Zipf(1.0) over KEYS keys (env KEYS, default 100000).
-- The inverse CDF is tabulated once per thread, so each request costs one binary search.
local keys = tonumber(os.getenv("KEYS") or "100000")
local cdf = {}

function init(args)
  local sum = 0
  for i = 1, keys do sum = sum + 1 / i end
  local acc = 0
  for i = 1, keys do
    acc = acc + (1 / i) / sum
    cdf[i] = acc
  end
  math.randomseed(os.time())
end

local function draw()
  local u = math.random()
  local lo, hi = 1, keys
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end

function request()
  return wrk.format("GET", wrk.path .. "?k=" .. draw())
end
