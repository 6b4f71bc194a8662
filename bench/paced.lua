-- wrk script: a paced load for latency at a fixed rate (bench/latency.py).
-- Each connection waits DELAY milliseconds after every response before its next request, so
-- CONNECTIONS connections send about CONNECTIONS * 1000 / (DELAY + latency) requests per second.
-- DELAY is the script's first argument: `wrk -s paced.lua URL -- 6.4` (fractions are kept by
-- alternating between the two neighbouring whole milliseconds, wrk's timer resolution).
-- Heads vary as in varied.lua (path, query and cookie change per request).
local wait = 1
local counter = 0
local credit = 0

function init(args)
  wait = tonumber(args[1]) or 1
end

function delay()
  credit = credit + wait
  local whole = math.floor(credit)
  credit = credit - whole
  return whole
end

request = function()
  counter = counter + 1
  local path = "/products?id=" .. counter .. "&q=item" .. (counter * 7919 % 100000)
  local headers = {
    ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ["Accept-Language"] = "en-US,en;q=0.5",
    ["Referer"] = "https://shop.example.com/?from=" .. (counter - 1),
    ["Cookie"] = "session=" .. string.format("%016x", counter * 2654435761 % 4294967296) .. "; theme=light",
  }
  return wrk.format("GET", path, headers)
end
