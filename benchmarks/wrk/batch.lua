-- POST /items/batch: params.batch_rows new items with tags.
require "items"

request = function()
  local rows = {}
  for row = 1, params.batch_rows do
    rows[row] = random_new_item()
  end
  local body = '{"items": [' .. table.concat(rows, ", ") .. ']}'
  return wrk.format("POST", "/items/batch", nil, body)
end
