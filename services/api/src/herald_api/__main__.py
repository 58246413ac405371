from herald_api.main import main

main()
