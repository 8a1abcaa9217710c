-- Argo CD health check for augment.dev/v1alpha1 AugmentationJob, from status.phase.
-- Written for Argo CD's Lua 5.1 (gopher-lua); tests/unit/test_argocd_health.py runs it.
--
--   no status yet                  -> Progressing "waiting for the operator"
--   status of an older generation  -> Progressing (the operator has not seen the edit)
--   Pending, Queued, Running       -> Progressing "Running 40% (2/5): <message>"
--                                     (Queued: waiting in a Kueue queue, with Kueue's reason)
--   Succeeded                      -> Healthy "Succeeded: <output dataset id>"
--   Failed                         -> Degraded "Failed 40% (2/5): <runner's message>"
--   Cancelled                      -> Degraded "Cancelled: cancelled on request"
--   (the progress text appears once the runner has reported some)
--   anything else                  -> Unknown
--
-- Cancelled is Degraded, not Suspended: Suspended means "paused, can resume" (a
-- suspended CronJob), but a cancelled job is final and never made the output its
-- manifest in Git asks for, so the Application should not look fine or paused.
local hs = {}

local function nonempty(value)
  return value ~= nil and value ~= ""
end

local function describe(phase, status)
  local text = phase
  if status.progress ~= nil and nonempty(status.progress.text) then
    text = text .. " " .. status.progress.text
  end
  if nonempty(status.message) then
    text = text .. ": " .. status.message
  end
  return text
end

local status = obj.status
if status == nil or not nonempty(status.phase) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. generation
  return hs
end

local phase = status.phase
if phase == "Succeeded" then
  hs.status = "Healthy"
  if nonempty(status.outputDatasetId) then
    hs.message = "Succeeded: " .. status.outputDatasetId
  else
    hs.message = "Succeeded"
  end
elseif phase == "Pending" or phase == "Queued" or phase == "Running" then
  hs.status = "Progressing"
  hs.message = describe(phase, status)
elseif phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
  hs.message = describe(phase, status)
else
  hs.status = "Unknown"
  hs.message = "unknown phase " .. phase
end
return hs
