-- wrk script for bench/gateway.sh POST=1: every request is POST /facts with a 1 KiB JSON body
-- ({"fact": "<1000 characters>"}, 1,012 bytes; a fact is at most 1000 characters).
wrk.method = "POST"
wrk.body = '{"fact": "' .. string.rep("c", 1000) .. '"}'
wrk.headers["Content-Type"] = "application/json"
