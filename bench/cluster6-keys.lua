-- wrk script for bench/cluster6.sh: GET CLUSTER6_PATH, cycling over the API keys of the file
-- CLUSTER6_KEYS (one a line; each wrk process starts at a different one, by its process id), so
-- that every connection's requests spread over all the apps, i.e. over all the masters' slots.
local file = os.getenv("CLUSTER6_KEYS")
local path = os.getenv("CLUSTER6_PATH") or "/fact"
local requests = {}
local i = 0

function init(args)
    for line in io.lines(file) do
        if #line > 0 then
            requests[#requests + 1] = wrk.format("GET", path, { ["x-api-key"] = line })
        end
    end
    if #requests == 0 then
        error("no key in " .. tostring(file))
    end
    local pid = io.open("/proc/self/stat")
    local id = pid and tonumber(pid:read("*l"):match("^(%d+)")) or 0
    if pid then
        pid:close()
    end
    i = id % #requests
end

function request()
    i = i % #requests + 1
    return requests[i]
end
