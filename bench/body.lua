-- wrk script: POST requests with a body of N bytes, keep-alive (bench/run.py --scenarios post-1k,post-100k).
-- N is the script's first argument: `wrk -s body.lua URL -- 102400` (default 1024).
local req

function init(args)
  local size = tonumber(args[1]) or 1024
  local headers = { ["Content-Type"] = "application/octet-stream" }
  req = wrk.format("POST", "/upload", headers, string.rep("x", size))
end

function request()
  return req
end
