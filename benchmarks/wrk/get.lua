-- GET /items/{id}: any item.
require "point"

request = function()
  return wrk.format("GET", "/items/" .. math.random(1, params.items))
end
