-- POST /items: one new item with tags.
require "items"

request = function()
  return wrk.format("POST", "/items", nil, random_new_item())
end
