from incisive.cli import main

main()
