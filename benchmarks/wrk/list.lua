-- GET /items: a page after a random id.
require "point"

request = function()
  local after = math.random(0, params.items - params.page)
  return wrk.format("GET", "/items?limit=" .. params.page .. "&after=" .. after)
end
