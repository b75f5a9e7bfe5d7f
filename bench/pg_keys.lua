-- wrk script for bench/pg_keys.sh: GET /fact with a key picked at random per request from the
-- file KW_KEYS (one plaintext key per line, written by `keyward dev seed --sample-out`).
local path = os.getenv("KW_KEYS")
if path == nil or path == "" then
    error("KW_KEYS is not set")
end
local keys = {}
for line in io.lines(path) do
    if line ~= "" then
        keys[#keys + 1] = line
    end
end
if #keys == 0 then
    error("no keys in " .. path)
end
math.randomseed(os.time())
request = function()
    return wrk.format("GET", "/fact", { ["x-api-key"] = keys[math.random(#keys)] })
end
