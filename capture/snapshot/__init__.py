"""What is read from the live system while its processes are alive: processes, symbols, interfaces."""
