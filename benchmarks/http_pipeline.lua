-- wrk script: HTTP pipelining.  Every write carries `depth` GET requests
-- back to back (depth from the command line after "--", 16 by default);
-- wrk counts each of the responses.
local batch

function init(args)
  local depth = tonumber(args[1]) or 16
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format("GET", "/")
  end
  batch = table.concat(requests)
end

function request()
  return batch
end
