-- wrk script for bench/tokens.sh: POST /oauth/token, client_credentials grant, the client
-- authenticated with client_secret_basic. KW_BASIC = base64("client_id:client_secret").
-- Every response must be 200: wrk reports any other status as "Non-2xx or 3xx responses",
-- and bench/tokens_report.py refuses such a run.
local basic = os.getenv("KW_BASIC")
if basic == nil or basic == "" then
    error("KW_BASIC is not set")
end
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. basic
