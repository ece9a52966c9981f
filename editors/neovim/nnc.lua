-- nnc's language server in Neovim (0.7 or newer), without plugins.
-- Put this file in ~/.config/nvim/plugin/ (or `:luafile` it); `nnc` must be on PATH.
vim.cmd([[autocmd BufRead,BufNewFile *.nn setfiletype nn]])
vim.api.nvim_create_autocmd("FileType", {
  pattern = "nn",
  callback = function(event)
    vim.bo[event.buf].commentstring = "// %s"
    local client = vim.lsp.start_client({
      name = "nnc",
      cmd = { vim.env.NNC_BIN or "nnc", "lsp" },
      root_dir = vim.fn.fnamemodify(vim.api.nvim_buf_get_name(event.buf), ":p:h"),
    })
    if client then
      vim.lsp.buf_attach_client(event.buf, client)
    end
  end,
})
