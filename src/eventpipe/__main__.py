from eventpipe.cli import main

main()
