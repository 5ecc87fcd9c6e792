from hive_data.cli import main

main()
