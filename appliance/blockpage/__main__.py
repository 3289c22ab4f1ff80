import sys

from appliance.blockpage.server import main

sys.exit(main())
