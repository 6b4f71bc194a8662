-- wrk script: every request head different, as browsers send them (bench/run.py --scenarios varied).
-- The path, the query, the cookie, the referer and the user agent change per request; about
-- ten headers in all. Keep-alive as wrk's default; headers given with -H (e.g. `Connection: close`)
-- are added to every request.
local counter = 0
local pages = {"/", "/products", "/products/list", "/cart", "/account/orders", "/search", "/static/app.js", "/api/v1/items"}
local agents = {
  "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
}

request = function()
  counter = counter + 1
  local page = pages[counter % #pages + 1]
  local path = page .. "?id=" .. counter .. "&q=item" .. (counter * 7919 % 100000)
  local headers = {
    ["Host"] = "shop.example.com",
    ["User-Agent"] = agents[counter % #agents + 1],
    ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ["Accept-Language"] = "en-US,en;q=0.5",
    ["Accept-Encoding"] = "gzip, deflate, br",
    ["Referer"] = "https://shop.example.com" .. pages[(counter + 3) % #pages + 1] .. "?from=" .. (counter - 1),
    ["Cookie"] = "session=" .. string.format("%016x", counter * 2654435761 % 4294967296) .. "; theme=light; cart=" .. (counter % 97),
    ["Cache-Control"] = "no-cache",
    ["Sec-Fetch-Mode"] = "navigate",
  }
  for name, value in pairs(wrk.headers) do
    if name ~= "Host" then headers[name] = value end
  end
  return wrk.format("GET", path, headers)
end
