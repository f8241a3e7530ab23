"""The wrk side of `bench/load_api.py`: the Lua scripts that generate POST, batch and GET traffic with
fresh sample ids, report every answer's status and latency, and record the accepted requests' refs;
and `run_wrk`, which runs one cell (optionally with py-spy on the API processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ID_FORMAT = "b%08d"

LUA_COMMON = r"""
local threads = {}
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
statuses = {}
accepted = 0
refs = {}
local function note(status, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {}
  local total_accepted = 0
  local out = io.open("REFS_PATH", "w")
  for _, thread in ipairs(threads) do
    for _, ref in ipairs(thread:get("refs")) do out:write(ref, "\n") end
    for status, count in pairs(thread:get("statuses")) do
      total[tostring(status)] = (total[tostring(status)] or 0) + count
    end
    total_accepted = total_accepted + thread:get("accepted")
  end
  out:close()
  local parts = {}
  for status, count in pairs(total) do table.insert(parts, string.format('"%s":%d', status, count)) end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"statuses":{%s},"accepted":%d,"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, table.concat(parts, ","), total_accepted,
    e.connect, e.read, e.write, e.timeout))
end
"""

LUA_POST = r"""
function init(args)
  model, token, tag = args[1], args[2], args[3]
  nextid = tonumber(args[4]) + tid * tonumber(args[5])
  headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}
  n = 0
end
function request()
  n = n + 1
  local ids = {}
  for i = 1, (n % 5) + 1 do
    ids[i] = string.format('"ID_FORMAT"', nextid)
    nextid = nextid + 1
  end
  local body = '{"model_id":"' .. model .. '","sample_ids":[' .. table.concat(ids, ",") ..
    '],"external_ref":"' .. tag .. '-' .. tid .. '-' .. n .. '"}'
  return wrk.format("POST", "/v1/deletion-requests", headers, body)
end
function response(status, headers, body)
  note(status)
  if status == 202 then
    accepted = accepted + 1
    table.insert(refs, string.match(body, '"external_ref":"([^"]+)"'))
  end
end
"""

LUA_BATCH = r"""
function init(args)
  model, token, tag = args[1], args[2], args[3]
  nextid = tonumber(args[4]) + tid * tonumber(args[5])
  size = tonumber(args[6])
  headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}
  n = 0
end
function request()
  n = n + 1
  local items = {}
  for item = 1, size do
    local ids = {}
    for i = 1, (item % 3) + 1 do
      ids[i] = string.format('"ID_FORMAT"', nextid)
      nextid = nextid + 1
    end
    items[item] = '{"model_id":"' .. model .. '","sample_ids":[' .. table.concat(ids, ",") ..
      '],"external_ref":"' .. tag .. '-' .. tid .. '-' .. n .. '-' .. item .. '"}'
  end
  return wrk.format("POST", "/v1/deletion-requests/batch", headers,
    '{"requests":[' .. table.concat(items, ",") .. ']}')
end
function response(status, headers, body)
  note(status)
  if status == 200 then
    accepted = accepted + tonumber(string.match(body, '"accepted":(%d+)'))
    local accepted_item = '"status":202,"request":{"id":"[^"]+","model_id":"[^"]+","external_ref":"([^"]+)"'
    for ref in string.gmatch(body, accepted_item) do
      table.insert(refs, ref)
    end
  end
end
"""

LUA_GET = r"""
function init(args)
  token = args[2]
  ids = {}
  for line in io.lines(args[3]) do table.insert(ids, line) end
  headers = {["Authorization"] = "Bearer " .. token}
  n = tid * 7919
end
function request()
  n = n + 1
  return wrk.format("GET", "/v1/deletion-requests/" .. ids[(n % #ids) + 1], headers)
end
function response(status, headers, body)
  note(status)
  if status == 200 then accepted = accepted + 1 end
end
"""


def run_wrk(
    script: str,
    base: str,
    connections: int,
    duration: int,
    args: list[str],
    tmp: Path,
    profile: tuple[int, Path] | None = None,
) -> dict[str, Any]:
    path = tmp / "script.lua"
    refs = tmp / "refs.txt"
    refs.unlink(missing_ok=True)
    path.write_text((LUA_COMMON + script).replace("ID_FORMAT", ID_FORMAT).replace("REFS_PATH", str(refs)))
    threads = min(2, connections)
    command = [
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "30s",
        "-s", str(path), base, "--", *args,
    ]  # fmt: skip
    spy = None
    if profile is not None:  # py-spy on the uvicorn processes while wrk runs (collapsed stacks)
        pid, out = profile
        spy = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--rate", "250",
             "--duration", str(duration), "--nonblocking", "--gil", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120, check=False)
    if spy is not None:
        spy.wait(timeout=60)
    for line in output.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            result = dict(json.loads(line.removeprefix("WRK_RESULT ")))
            result["refs"] = refs.read_text().split() if refs.exists() else []
            if not result["requests"]:
                print(f"wrk sent nothing: {output.stderr[-1000:]}", file=sys.stderr)
            return result
    raise RuntimeError(f"wrk failed: {output.stdout[-2000:]} {output.stderr[-2000:]}")
