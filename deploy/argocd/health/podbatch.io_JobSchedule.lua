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
  hs.status = "Progressing"; hs.message = "waiting for podbatch to observe the schedule"; return hs
end
if is_true(obj, "Stalled") then
  hs.status = "Degraded"; hs.message = msg(obj, "Stalled", "the job schedule is stalled"); return hs
end
if obj.status.state == "disabled" then
  hs.status = "Suspended"; hs.message = "the job schedule is disabled"; return hs
end
if is_true(obj, "Reconciling") then
  hs.status = "Progressing"; hs.message = msg(obj, "Reconciling", "the job schedule is terminating"); return hs
end
if is_true(obj, "Ready") then
  hs.status = "Healthy"; hs.message = msg(obj, "Ready", "the job schedule is active"); return hs
end
hs.status = "Progressing"; hs.message = "waiting for the job schedule's conditions"
return hs
