-- wrk script for bench/cluster6.sh's failover run: GET the URL's path with the key CLUSTER6_KEY;
-- wrk's threads are spread over the keyward nodes of CLUSTER6_PORTS (comma-separated loopback
-- ports: thread n talks to port n mod count), and every response's status is counted; done()
-- prints "status <code> <count>" lines (all threads together).
local ports = {}
for p in string.gmatch(os.getenv("CLUSTER6_PORTS") or "", "[0-9]+") do
    ports[#ports + 1] = p
end
local threads = {}
local created = 0

function setup(thread)
    created = created + 1
    if #ports > 0 then
        local port = ports[(created - 1) % #ports + 1]
        thread.addr = wrk.lookup("127.0.0.1", port)[1]
    end
    threads[#threads + 1] = thread
end

function init(args)
    statuses = {}
    wrk.headers["x-api-key"] = os.getenv("CLUSTER6_KEY")
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        for code, n in pairs(t:get("statuses")) do
            total[code] = (total[code] or 0) + n
        end
    end
    for code, n in pairs(total) do
        io.write(string.format("status %d %d\n", code, n))
    end
end
