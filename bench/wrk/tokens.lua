-- wrk script: each request carries the next token of a file (one per line),
-- so every token is used exactly once; wrk ends once every token's answer is in.
--   wrk -t1 -cN -d120s -s bench/wrk/tokens.lua URL -- TOKEN_FILE
-- Use -t1: each wrk thread has its own Lua state (and would reuse the file).
--
-- wrk's main thread sleeps for the whole -d and only then reports, even if
-- the worker stops early; a SIGINT ends that sleep (wrk then reports the real
-- elapsed time). So: out of tokens, a connection idles (delay()) instead of
-- sending anything more, and the last answer stops the thread and sends wrk
-- a SIGINT. The reported count is exactly the number of tokens.
--
-- wrk calls request() once before the run to check it (script_verify_request);
-- that first call gets a request without a token, which is never sent.

local requests = {}
local next_index = 1
local reserved = 0
local answered = 0
local verified = false

-- Stops this thread and sends wrk a SIGINT (through LuaJIT's ffi: os.execute
-- would not do, system() ignores SIGINT while its child runs).
local function end_run()
  wrk.thread:stop()
  local ffi = require("ffi")
  ffi.cdef("int getpid(void); int kill(int pid, int sig);")
  ffi.C.kill(ffi.C.getpid(), 2)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format(nil, wrk.path, { ["Authorization"] = "Bearer " .. line })
    end
  end
end

-- wrk asks delay() before each request() of a connection, and several
-- connections may ask before any of them sends: a token is reserved here, so
-- no more than one request per token is ever made.
function delay()
  if reserved < #requests then
    reserved = reserved + 1
    return 0
  end
  return 3600000 -- no token left: this connection waits (the run ends long before)
end

function request()
  if not verified then
    verified = true
    return wrk.format(nil, "/api/public")
  end
  local req = requests[next_index]
  next_index = next_index + 1
  return req
end

function response(status, headers, body)
  answered = answered + 1
  if answered == #requests then
    end_run()
  end
end
