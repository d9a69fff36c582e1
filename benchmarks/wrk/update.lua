-- PATCH /items/{id}: a new price and new tags for any item.
require "items"

request = function()
  local tag_ids = random_tag_ids()
  local body = string.format(
    '{"price_cents": %d, "tag_ids": [%s]}', math.random(0, 100000), tag_ids)
  return wrk.format("PATCH", "/items/" .. math.random(1, params.items), nil, body)
end
