-- wrk script for bench/web_status.py: each request comes from one of BENCH_CLIENTS client
-- addresses in turn (X-Forwarded-For, from a trusted proxy), so the status poll limit counts
-- many clients at its production rate instead of one client at an unreachable one.
local clients = tonumber(os.getenv("BENCH_CLIENTS"))
local sent = 0

request = function()
  sent = sent + 1
  local n = sent % clients
  wrk.headers["X-Forwarded-For"] = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil)
end
