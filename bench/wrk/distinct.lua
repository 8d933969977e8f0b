-- wrk script: every request carries a token never sent before, made from a
-- counter (no token file), LIMIT tokens in all; wrk ends once every answer is
-- in. For the memory run (bench/memory.py), against a stub issuer that vouches
-- for any token.
--   wrk -t1 -cN -d1200s -s bench/wrk/distinct.lua URL -- LIMIT PREFIX
-- Use -t1: the counter lives in the thread's Lua state. How the run ends
-- early (delay() and a SIGINT to wrk), and wrk's first, unsent request():
-- see tokens.lua.

local limit = 0
local prefix = "m"
local sent = 0
local reserved = 0
local answered = 0
local verified = false

function init(args)
  limit = tonumber(args[1])
  prefix = args[2] or prefix
end

-- One token reserved per delay() call, as in tokens.lua: never more than LIMIT requests.
function delay()
  if reserved < limit then
    reserved = reserved + 1
    return 0
  end
  return 3600000
end

function request()
  if not verified then
    verified = true
    return wrk.format(nil, "/api/public")
  end
  sent = sent + 1
  -- 48 characters, about the size of an opaque token; b64token characters only.
  local token = prefix .. string.format("%0" .. (48 - #prefix) .. "d", sent)
  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. token })
end

function response(status, headers, body)
  answered = answered + 1
  if answered == limit then
    wrk.thread:stop()
    local ffi = require("ffi")
    ffi.cdef("int getpid(void); int kill(int pid, int sig);")
    ffi.C.kill(ffi.C.getpid(), 2)  -- SIGINT: see end_run() in tokens.lua
  end
end
