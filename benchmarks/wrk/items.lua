-- Random request bodies for the write routes, drawn in the same order whatever the route:
-- first the tags, then the price, then the owner.
require "point"

-- The bodies are JSON. Set on wrk.headers, beside the Authorization header the driver passes
-- with -H: wrk.format sends the headers table it is given instead of wrk.headers, not merged.
wrk.headers["Content-Type"] = "application/json"

-- Up to params.max_tags distinct tag ids, as a JSON array's inside ("3, 17").
function random_tag_ids()
  local chosen, ids = {}, {}
  for _ = 1, math.random(0, params.max_tags) do
    local tag = math.random(1, params.tags)
    if not chosen[tag] then
      chosen[tag] = true
      ids[#ids + 1] = tag
    end
  end
  return table.concat(ids, ", ")
end

-- One new item with tags, as the JSON POST /items takes.
function random_new_item()
  local tag_ids = random_tag_ids()
  return string.format(
    '{"name": "bench item", "description": "made by the benchmark", "price_cents": %d, '
    .. '"owner_id": %d, "tag_ids": [%s]}',
    math.random(0, 100000), math.random(1, params.owners), tag_ids)
end
