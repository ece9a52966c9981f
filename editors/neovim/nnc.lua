-- nnc's language server in Neovim (0.7 or newer), without plugins.
-- Put this file in ~/.config/nvim/plugin/ (or `:luafile` it); `nnc` must be on PATH.
vim.cmd([[autocmd BufRead,BufNewFile *.nn setfiletype nn]])

-- One server for every .nn buffer: it tells files apart by their URIs.
local client_id = nil

vim.api.nvim_create_autocmd("FileType", {
  pattern = "nn",
  callback = function(event)
    vim.bo[event.buf].commentstring = "// %s"
    if client_id == nil or vim.lsp.get_client_by_id(client_id) == nil then
      client_id = vim.lsp.start_client({
        name = "nnc",
        cmd = { vim.env.NNC_BIN or "nnc", "lsp" },
        root_dir = vim.fn.fnamemodify(vim.api.nvim_buf_get_name(event.buf), ":p:h"),
      })
    end
    if client_id then
      vim.lsp.buf_attach_client(event.buf, client_id)
    end
  end,
})
