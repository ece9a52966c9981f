-- Run by tests/editor.rs: Neovim's own LSP client against `nnc lsp` (the
-- configuration in editors/neovim/nnc.lua), writing back what it shows.
local out = os.getenv("OUT")
local ok, err = pcall(function()
  vim.cmd("luafile " .. vim.fn.fnameescape(os.getenv("CONFIG")))
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("MODEL")))
  local published = vim.wait(60000, function()
    return #vim.diagnostic.get(0) > 0
  end, 20)
  local lines = { "filetype " .. vim.bo.filetype, "clients " .. #vim.lsp.buf_get_clients(0) }
  if not published then
    table.insert(lines, "no diagnostics")
  end
  for _, d in ipairs(vim.diagnostic.get(0)) do
    table.insert(lines, string.format("%d:%d:%d:%s", d.lnum + 1, d.col, d.severity, (d.message:gsub("\n", " | "))))
  end
  -- A second file is served by the same server.
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("MODEL2")))
  vim.wait(60000, function()
    return #vim.diagnostic.get(0) > 0
  end, 20)
  table.insert(lines, "servers " .. #vim.lsp.get_active_clients())
  for _, d in ipairs(vim.diagnostic.get(0)) do
    table.insert(lines, string.format("%d:%d:%d:%s", d.lnum + 1, d.col, d.severity, (d.message:gsub("\n", " | "))))
  end
  vim.fn.writefile(lines, out)
end)
if not ok then
  vim.fn.writefile({ "error " .. tostring(err) }, out)
end
vim.cmd("qa!")
