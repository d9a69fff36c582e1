-- GET /items/{id}: one of the hot set the driver passes ("hot=12,345,...").
require "point"

local hot = {}
local init_point = init
init = function(args)
  init_point(args)
  for id in params.hot:gmatch("%d+") do
    hot[#hot + 1] = tonumber(id)
  end
end

request = function()
  return wrk.format("GET", "/items/" .. hot[math.random(#hot)])
end
