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
-- A task's first status write is its running state, its completion or its pending
-- reason: no status yet means queued (or bound by its pod and about to run).
local st = obj.status
if st == nil or st.state == nil then
  hs.status = "Progressing"; hs.message = "the task is queued or starting"; return hs
end
if is_true(obj, "Stalled") then
  hs.status = "Degraded"; hs.message = msg(obj, "Stalled", "the task is stalled"); return hs
end
if st.state == "completed" then
  local info = st.executionInfo or {}
  if info.result == "failure" then
    hs.status = "Degraded"; hs.message = "the task failed"; return hs
  end
  hs.status = "Healthy"; hs.message = "the task completed with success"; return hs
end
hs.status = "Progressing"
hs.message = msg(obj, "Ready", msg(obj, "Reconciling", "the task is " .. st.state))
return hs
