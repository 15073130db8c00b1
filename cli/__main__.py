from hyrax_cli.main import main

main()
