from align.cli.main import main

main()
