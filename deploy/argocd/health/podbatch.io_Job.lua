-- podbatch health check for Argo CD (resource.customizations.health.<group_kind>).
-- Reads the kstatus conditions podbatch writes (Ready / Reconciling / Stalled, see
-- docs/gitops.md) and the Batch state. The helpers are repeated in each kind's script:
-- Argo CD runs every script on its own.
local hs = {}
local function cond(o, t)
  if o.status == nil or o.status.conditions == nil then return nil end
  for _, c in ipairs(o.status.conditions) do
    if c.type == t then return c end
  end
  return nil
end
local function is_true(o, t)
  local c = cond(o, t)
  return c ~= nil and c.status == "True"
end
local function msg(o, t, default)
  local c = cond(o, t)
  if c ~= nil and c.message ~= nil and c.message ~= "" then return c.message end
  return default
end
local function stale(o)
  -- the status does not describe the current spec yet
  return o.status == nil or o.status.observedGeneration == nil or
    (o.metadata.generation ~= nil and o.status.observedGeneration ~= o.metadata.generation)
end
if stale(obj) then
  hs.status = "Progressing"; hs.message = "waiting for podbatch to observe the job spec"; return hs
end
local st = obj.status
local counts = st.taskCounts or {}
local info = st.executionInfo or {}
if is_true(obj, "Stalled") then
  hs.status = "Degraded"; hs.message = msg(obj, "Stalled", "the job is stalled"); return hs
end
if st.state == "completed" then
  local failed = counts.failed or 0
  local reason = info.terminateReason or ""
  if failed > 0 or reason == "TaskFailed" or reason == "MaxWallClockTimeExpiry" then
    hs.status = "Degraded"
    hs.message = "the job completed (" .. reason .. ") with " .. tostring(failed) .. " failed tasks"
    return hs
  end
  hs.status = "Healthy"; hs.message = msg(obj, "Completed", "the job completed"); return hs
end
if st.state == "disabled" then
  hs.status = "Suspended"; hs.message = msg(obj, "Ready", "the job is disabled"); return hs
end
if is_true(obj, "Reconciling") then
  hs.status = "Progressing"; hs.message = msg(obj, "Reconciling", "the job is changing state"); return hs
end
if is_true(obj, "Ready") then
  if (counts.active or 0) + (counts.running or 0) > 0 then
    hs.status = "Progressing"; hs.message = msg(obj, "Completed", "tasks are running"); return hs
  end
  hs.status = "Healthy"; hs.message = msg(obj, "Ready", "the job is active and has no task waiting"); return hs
end
hs.status = "Progressing"; hs.message = "waiting for the job's conditions"
return hs
