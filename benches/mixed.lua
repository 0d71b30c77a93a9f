-- wrk script for benches/soak.sh: a mix of proxied, cached (5,000 keys) and gzip-compressed
-- requests, with rate limiting and the access log on the way.
local paths = { "/p/api/test", "/c/api/test?k=", "/z/big" }

function request()
  local r = math.random(10)
  if r <= 5 then
    return wrk.format("GET", paths[1])
  elseif r <= 9 then
    return wrk.format("GET", paths[2] .. math.random(5000))
  else
    return wrk.format("GET", paths[3], { ["Accept-Encoding"] = "gzip" })
  end
end
