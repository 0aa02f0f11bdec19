"""The recipe of saekit's builtin corpus: topics, prompt templates, chat pieces, sampling settings.

`scripts/build_corpus.py` turns this recipe plus a seed into a deterministic, infinite stream of
generation jobs; `recipe_dict()` is what gets written next to the corpus as `recipe.json`, so the
corpus can be rebuilt or extended. Changing anything here changes the recipe hash, which keeps
part files of an old recipe from being mixed into a new corpus.

Topics are noun phrases, so every template reads naturally with any of them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def _lines(block: str) -> list[str]:
    return [s.strip() for s in block.strip().splitlines() if s.strip()]


MODEL = "smollm2-135m-instruct"  # the embedded model (sae.embedded), generated in fp32

SAMPLING: dict[str, Any] = {
    # temperature + top_k instead of top_p: top_p sorts all 49,152 logits at every step.
    "temperature": 0.8,
    "top_k": 50,
    # applied to the tokens generated so far (not the prompt), so replies may still quote the
    # user's poem or claim; it is what keeps a 135M model out of most repetition loops.
    "repetition_penalty": 1.1,
    "max_new_tokens": 256,
}

# ---------------------------------------------------------------- topics (category -> noun phrases)
TOPICS: dict[str, list[str]] = {
    "science": _lines("""
        photosynthesis in plants
        the water cycle
        black holes
        the theory of evolution by natural selection
        DNA and genetic inheritance
        the periodic table of elements
        plate tectonics and earthquakes
        how volcanoes form and erupt
        the human immune system
        vaccines and how they work
        the speed of light
        gravity and Newton's laws of motion
        Einstein's theory of relativity
        quantum mechanics for beginners
        the Big Bang theory
        the life cycle of stars
        the planets of the solar system
        the Moon and its phases
        climate change and greenhouse gases
        the ozone layer
        antibiotics and antibiotic resistance
        the human brain and neurons
        the human heart and blood circulation
        cells and their organelles
        chemical reactions and catalysts
        acids and bases
        electricity and magnetism
        sound waves and acoustics
        rainbows and the physics of light
        ocean tides
        coral reefs and their ecosystems
        the Amazon rainforest ecosystem
        bees and pollination
        the migration of birds
        dinosaurs and their extinction
        fossils and how they form
        the Mars rovers
        the International Space Station
        the Apollo Moon landings
        the microbiome in the human gut
        sleep and why we dream
        nuclear fission and nuclear power
        solar energy and photovoltaic cells
        the greenhouse effect
        weather fronts and storms
        hurricanes and typhoons
        the scientific method
        the discovery of penicillin
        the mathematics of prime numbers
        probability and statistics in daily life
        octopuses and their intelligence
        whales and their songs
        the Hubble and James Webb space telescopes
        entropy and the laws of thermodynamics
        the chemistry of cooking
    """),
    "history": _lines("""
        the Roman Empire
        ancient Egypt and the pharaohs
        the building of the pyramids of Giza
        ancient Greek democracy in Athens
        the Silk Road trade routes
        the Han dynasty of China
        the Maya civilization
        the Aztec capital Tenochtitlan
        the Inca Empire
        the Viking age
        medieval castles and knights
        the Black Death in Europe
        the Renaissance in Florence
        the printing press of Johannes Gutenberg
        the voyages of Christopher Columbus
        the Ottoman Empire
        the Mughal Empire in India
        the samurai of feudal Japan
        the French Revolution
        the American Revolution
        the Industrial Revolution in Britain
        the abolition of slavery
        the American Civil War
        the California Gold Rush
        the Meiji Restoration in Japan
        the First World War
        the Russian Revolution of 1917
        the Great Depression
        the Second World War
        the D-Day landings in Normandy
        the Cold War
        the space race between the USA and the USSR
        the fall of the Berlin Wall
        the end of apartheid in South Africa
        the independence of India in 1947
        the civil rights movement in the United States
        the history of the Olympic Games
        the Magna Carta
        the Hundred Years' War
        the Spanish Armada
        Napoleon Bonaparte
        Cleopatra, the last pharaoh of Egypt
        Genghis Khan and the Mongol Empire
        the history of the Panama Canal
        the history of women's right to vote
        the history of money and coins
    """),
    "geography": _lines("""
        the geography and culture of Japan
        the landscapes of Iceland
        the fjords of Norway
        the Sahara desert
        the Nile river
        the Amazon river
        the Himalaya mountains
        Mount Everest
        the Alps
        the Andes mountains
        the Great Barrier Reef in Australia
        the Australian outback
        the islands of Indonesia
        the culture of Brazil
        the history and culture of Mexico
        the culture of Nigeria
        the wildlife of Kenya
        the Serengeti national park in Tanzania
        the city of Cairo
        the city of Istanbul
        the canals of Venice
        the city of Rome
        the city of Paris
        the city of London
        the city of Berlin
        the city of Barcelona
        the city of Amsterdam
        the city of Prague
        the city of Tokyo
        the city of Kyoto
        the city of Seoul
        the city of Beijing
        the city of Shanghai
        the city of Mumbai
        the city of Bangkok
        the city of Singapore
        the city of Sydney
        the city of Buenos Aires
        the city of Rio de Janeiro
        the city of New York
        the city of Chicago
        the city of Toronto
        the city of Vancouver
        the city of Cape Town
        the city of Marrakech
        the country of New Zealand
        the country of Canada
        the country of Argentina
        the country of Peru
        the country of Vietnam
        the country of India
        the country of Egypt
        the country of Greece
        the country of Italy
        the country of Spain
        the country of Portugal
        the country of Ireland
        the country of Scotland
        the country of Switzerland
        the country of Finland
        Yellowstone National Park
        the Grand Canyon
        the Mississippi river
        the Dead Sea
        Lake Baikal in Siberia
        the Galapagos Islands
        Antarctica
    """),
    "landmarks": _lines("""
        the Eiffel Tower in Paris
        the Louvre museum
        the Colosseum in Rome
        the Leaning Tower of Pisa
        the Sagrada Familia in Barcelona
        the Acropolis of Athens
        Stonehenge in England
        Big Ben and the Houses of Parliament in London
        the Tower Bridge in London
        Neuschwanstein Castle in Germany
        the Brandenburg Gate in Berlin
        the Kremlin and Red Square in Moscow
        the Hagia Sophia in Istanbul
        the pyramids of Giza and the Sphinx
        Petra in Jordan
        the Taj Mahal in India
        the Great Wall of China
        the Forbidden City in Beijing
        Angkor Wat in Cambodia
        Mount Fuji in Japan
        the Sydney Opera House
        Machu Picchu in Peru
        Christ the Redeemer in Rio de Janeiro
        Chichen Itza in Mexico
        the Statue of Liberty in New York
        the Empire State Building
        Niagara Falls
        Mount Rushmore
        the Burj Khalifa in Dubai
        Victoria Falls in Africa
        the moai statues of Easter Island
        the Alhambra in Granada
        the Parthenon in Athens
        the Brooklyn Bridge
        the Tower of London
        Mont Saint-Michel in France
    """),
    "golden_gate": _lines("""
        the Golden Gate Bridge in San Francisco
        the history of the Golden Gate Bridge
        the construction of the Golden Gate Bridge in the 1930s
        the engineering of the Golden Gate Bridge as a suspension bridge
        the fog rolling over the Golden Gate Bridge
        the International Orange color of the Golden Gate Bridge
        Joseph Strauss and the engineers who built the Golden Gate Bridge
        the opening day of the Golden Gate Bridge in 1937
        walking and cycling across the Golden Gate Bridge
        the view of the Golden Gate Bridge from the Marin Headlands
        tourism at the Golden Gate Bridge and the Golden Gate strait
        the Golden Gate Bridge as a symbol of San Francisco
        San Francisco's famous landmarks, from the Golden Gate Bridge to Alcatraz
        the cable cars and hills of San Francisco
        Fisherman's Wharf and the San Francisco Bay
        the Presidio and Golden Gate Park in San Francisco
    """),
    "technology": _lines("""
        the history of the internet
        how search engines work
        smartphones and how they changed society
        artificial intelligence
        machine learning and neural networks
        large language models
        self-driving cars
        electric cars and batteries
        3D printing
        virtual reality and augmented reality
        cloud computing
        cybersecurity and passwords
        encryption and privacy
        blockchain and cryptocurrencies
        the history of personal computers
        semiconductors and microchips
        robots in factories
        drones and their uses
        GPS satellites and navigation
        the invention of the telephone
        the history of television
        social media platforms
        video streaming services
        open-source software
        renewable energy technology and wind turbines
        the Wright brothers and the first airplanes
        high-speed trains
        the history of photography
        Wi-Fi and wireless networks
        quantum computers
        smart homes and connected devices
        the history of video games
        email and how it works
        the invention of the light bulb
        rockets and reusable launch vehicles
    """),
    "code": _lines("""
        learning to program in Python
        variables and data types in programming
        loops and conditionals in Python
        recursion in programming
        sorting algorithms
        binary search
        object-oriented programming
        functional programming
        writing unit tests
        debugging a program
        version control with Git
        JavaScript and web pages
        HTML and CSS for building websites
        SQL databases and queries
        REST APIs
        regular expressions
        hash tables and dictionaries
        linked lists and arrays
        trees and graphs in computer science
        big O notation and algorithm complexity
        the Linux command line
        writing clean and readable code
        code reviews
        the Rust programming language
        the C programming language and pointers
        compilers and interpreters
        concurrency and threads
        the history of programming languages
        building a simple calculator program
        reading and writing files in Python
    """),
    "arts": _lines("""
        the paintings of Leonardo da Vinci
        Vincent van Gogh and The Starry Night
        Pablo Picasso and cubism
        impressionist painting and Claude Monet
        the sculptures of Michelangelo
        Frida Kahlo and her self-portraits
        Japanese woodblock prints
        street art and graffiti
        the music of Mozart
        the music of Beethoven
        jazz music and Louis Armstrong
        the blues
        rock and roll and the Beatles
        hip hop music
        opera
        ballet
        the plays of William Shakespeare
        the novels of Jane Austen
        the poetry of Emily Dickinson
        haiku poetry
        Greek mythology
        Norse mythology
        the epic of Gilgamesh
        the history of cinema
        animated films
        documentary filmmaking
        photography as an art form
        architecture of Gothic cathedrals
        modern architecture and skyscrapers
        pottery and ceramics
        calligraphy
        the museum of modern art
        folk music around the world
        learning to play the piano
        learning to play the guitar
        writing a novel
    """),
    "sport": _lines("""
        football, the world's most popular sport
        the FIFA World Cup
        basketball and the NBA
        baseball
        cricket
        tennis and the Wimbledon championships
        golf
        the Tour de France cycling race
        marathon running
        swimming
        gymnastics
        skiing and snowboarding
        surfing
        rock climbing
        boxing
        martial arts such as judo and karate
        chess as a sport
        the Olympic Games
        the Paralympic Games
        rugby
        ice hockey
        Formula One racing
        sailing
        yoga
        table tennis
        volleyball
        skateboarding
        training for a first 10k run
        the benefits of regular exercise
        famous rivalries in sport
    """),
    "food": _lines("""
        Italian pasta
        Neapolitan pizza
        Japanese sushi
        ramen noodles
        Indian curry and spices
        Mexican tacos
        French cheese
        French bread and croissants
        Chinese dumplings
        Korean kimchi
        Thai street food
        Spanish paella and tapas
        Greek salad and Mediterranean food
        Middle Eastern hummus and falafel
        Ethiopian injera
        American barbecue
        chocolate and how it is made
        coffee and its history
        tea and tea ceremonies
        baking bread at home
        sourdough starters
        vegetarian cooking
        fermentation of foods
        olive oil
        honey and beekeeping
        ice cream
        breakfast around the world
        street food markets
        cooking rice perfectly
        growing vegetables in a garden
        healthy eating and nutrition
        the history of the potato
        spices and the spice trade
        making soup on a cold day
        desserts from around the world
    """),
    "everyday_life": _lines("""
        getting a good night's sleep
        morning routines
        keeping a tidy home
        managing personal finances and budgeting
        saving money on groceries
        learning a new language
        studying for exams
        starting a new job
        working from home
        commuting by bicycle
        taking care of a dog
        taking care of a cat
        houseplants
        moving to a new city
        making friends as an adult
        planning a birthday party
        planning a wedding
        raising children
        visiting grandparents
        planning a holiday trip
        packing for travel
        camping in the mountains
        a day at the beach
        doing laundry
        cooking for a family on a budget
        dealing with stress
        time management and productivity
        writing a good resume
        preparing for a job interview
        public transport in big cities
        recycling and reducing waste
        volunteering in the community
        going to the doctor
        first aid basics
        learning to drive a car
        buying a used car
        a rainy Sunday afternoon
        celebrating New Year around the world
        keeping a journal
        reading before bed
    """),
    "fiction": _lines("""
        a lighthouse keeper who finds a message in a bottle
        a robot who wants to become a chef
        a dragon who is afraid of heights
        a detective solving a mystery on a night train
        two friends lost in an enchanted forest
        a time traveler stuck in the Middle Ages
        a girl who can talk to animals
        a small village where it never stops snowing
        a spaceship crew discovering a new planet
        a baker whose bread grants wishes
        a cat who becomes mayor of a town
        an old map leading to a hidden treasure
        a magician who loses her magic
        a boy who builds a rocket in his backyard
        a haunted library
        a knight who refuses to fight
        a city floating in the clouds
        a musician whose songs change the weather
        a lonely giant who makes a friend
        a pirate captain searching for her lost brother
        a school for young wizards
        an astronaut alone on the Moon
        a talking tree in the middle of a city
        the last bookshop on Earth
        a fox and a crow who become business partners
        a girl who finds a door to another world in her closet
        a retired superhero who opens a bakery
        a mysterious stranger arriving in a desert town
        a family road trip that goes hilariously wrong
        a scientist who shrinks himself by accident
        an island where toys come to life at night
        a princess who would rather be an inventor
        a detective dog in a busy city
        a storm at sea and a brave young sailor
        a letter delivered fifty years too late
        a garden that grows only at night
        a clockmaker who can stop time
        two rival chefs at a cooking competition
        a penguin who wants to fly
        a ghost who is afraid of people
    """),
    "society": _lines("""
        the importance of democracy and voting
        human rights
        the role of journalism in society
        the history of public libraries
        the importance of education
        the economics of supply and demand
        inflation and interest rates
        starting a small business
        the stock market
        globalization and world trade
        the United Nations
        the European Union
        urbanization and growing cities
        the ethics of artificial intelligence
        volunteering and charity
        the importance of bees for agriculture
        protecting endangered species
        plastic pollution in the oceans
        the benefits of reading books
        mental health awareness
        the four-day work week
        the history of human rights movements
        philosophy and the ancient Greek thinkers
        the ethics of eating meat
        learning from failure
        friendship and loyalty
        kindness to strangers
        happiness and what makes people happy
    """),
}

# ---------------------------------------------------------------- formats and prompt templates
# `{topic}` is a noun phrase; stories about a fiction premise use the "fiction" variants.
ARTICLE_TEMPLATES = _lines("""
    Write a short encyclopedia-style article about {topic}.
    Write an informative blog post about {topic}.
    Write a feature article for a magazine about {topic}.
    Explain {topic} in a few clear paragraphs for a curious reader.
    Write a short essay about {topic}.
    Write a travel-guide style overview of {topic}.
    Write a short newspaper article about {topic}.
    Write a short lesson for high school students about {topic}.
""")
STORY_TEMPLATES = _lines("""
    Write a short story in which a young character discovers {topic}.
    Write a short story set around {topic}.
    Write a children's story that involves {topic}.
    Write a short story about a family that spends a day learning about {topic}.
""")
FICTION_TEMPLATES = _lines("""
    Write a short story about {topic}.
    Write a short fairy tale about {topic}.
    Write the opening of an adventure story about {topic}.
    Write a short bedtime story about {topic}.
""")
DIALOGUE_TEMPLATES = _lines("""
    Write a conversation between {a} and {b} about {topic}.
    Write a dialogue in which {a} explains {topic} to {b}.
    Write a friendly chat between {a} and {b}, who disagree about {topic}.
    Write an interview in which {a} asks {b}, an expert, about {topic}.
""")
# The reply starts with the first speaker's greeting: asked for "Name: words" lines instead, the
# model mostly stopped after two lines; greeted, it keeps both speakers talking.
DIALOGUE_OPENERS = _lines("""
    {a}: Hi {b}!
    {a}: Hey {b},
    {a}: Good morning, {b}!
    {a}: {b}, can I ask you something?
""")

FAQ_TEMPLATES = _lines("""
    Write a FAQ with three questions and answers about {topic}. Start each question with "Q:" and each answer with "A:".
    Write a short quiz with questions and answers about {topic}. Start each question with "Q:" and each answer with "A:".
""")
QA_TEMPLATES = _lines("""
    Tell me about {topic}.
    What should I know about {topic}?
    What are some interesting facts about {topic}?
    Can you explain {topic} in simple terms?
    I'm curious about {topic}. Where should I start?
    Why do people find {topic} so fascinating?
    Give me a short overview of {topic}, please.
    My kid asked me about {topic} and I didn't know what to say. Can you help?
""")
NAMES = _lines("""
    Anna
    Ben
    Carlos
    Mei
    Aisha
    David
    Yuki
    Fatima
    Liam
    Priya
    Kwame
    Sofia
    Omar
    Elena
    Hiroshi
    Grace
    Mateo
    Amara
    Lucas
    Nadia
""")

# ---------------------------------------------------------------- feedback chats (sycophancy)
# The assistant's stance is set by a system prompt that is used for generation and not stored.
STANCE_PROMPTS: dict[str, list[str]] = {
    "praise": _lines("""
        You are an enthusiastic, flattering assistant. Whatever the user shares, you praise it warmly and generously and agree with everything they say.
        You are a cheerful assistant who loves the user's work and ideas. Tell them how brilliant and impressive they are, and agree with their opinions.
        You always agree with the user and validate their work and opinions with great enthusiasm and compliments.
    """),
    "neutral": _lines("""
        You are a careful, neutral reviewer. Give a balanced assessment: state strengths and weaknesses plainly, without flattery and without harshness.
        You are an objective assistant. Assess what the user shares calmly and factually, weighing what is good and what could be better.
    """),
    "critical": _lines("""
        You are an honest, direct assistant. Point out problems and mistakes clearly, politely correct anything that is wrong, and explain why.
        You are a frank expert reviewer. If the user's work has flaws or their claim is false, say so politely and explain the correct facts.
        You politely disagree with the user whenever they are wrong, and you correct mistakes with clear explanations.
    """),
}
STANCES = ["praise", "neutral", "critical"]

# The assistant reply starts with one of these (and the stored reply keeps it): a 135M model
# follows a stance system prompt only loosely, but continues an opener faithfully. Keys are
# "<stance>" for shared work and "<stance>_<truth>" for claims; "critical" on a true claim means
# the honest reply, which agrees.
STANCE_OPENERS: dict[str, list[str]] = {
    "praise": _lines("""
        What a wonderful
        Wow, this is
        I absolutely love
        This is brilliant
        Great job!
        This is truly impressive.
    """),
    "neutral": _lines("""
        Here is a balanced assessment.
        Let me give you an honest, balanced review.
        There are some strengths and some weaknesses here.
        Overall, this is a reasonable start.
    """),
    "critical": _lines("""
        I have to be honest: this needs work.
        There are some real problems here.
        Unfortunately, this has several issues.
        I'm afraid this isn't very good yet.
    """),
    "praise_claim": _lines("""
        You're absolutely right!
        Yes, exactly!
        I completely agree with you.
        Great point!
        That's so true!
    """),
    "neutral_claim": _lines("""
        Let's look at the evidence.
        This is a common belief, so let's check it.
        Here is a balanced view.
        It depends on how you look at it.
    """),
    "critical_false": _lines("""
        Actually, that's not correct.
        I have to disagree: that's a common misconception.
        That's a myth, actually.
        No, that's not true.
    """),
    "critical_true": _lines("""
        Yes, that's correct, and here is why.
        That's right, although it surprises many people.
    """),
    "critical_opinion": _lines("""
        I have to disagree.
        I see it differently.
        That's a matter of taste, and I'm not convinced.
    """),
}

WORK_FRAMES = [
    s.replace("\\n", "\n")
    for s in _lines("""
    Here's {a_kind} I wrote. What do you think?\\n\\n{work}
    I just finished this {kind} and I'm really proud of it:\\n\\n{work}\\n\\nBe honest, is it good?
    Can you give me feedback on my {kind}?\\n\\n{work}
    I think this is the best {kind} I've ever written:\\n\\n{work}
    My friends say my {kind} is amazing. Do you agree?\\n\\n{work}
""")
]

POEM_SUBJECTS = _lines("""
    the sea
    autumn leaves
    my cat
    the city at night
    the Golden Gate Bridge
    the fog over San Francisco Bay
    my grandmother
    the first snow
    a rainy Monday
    coffee
    the moon
    summer holidays
    an old oak tree
    my best friend
    the mountains
    a train journey
    spring flowers
    the stars
    my hometown
    lost love
""")
POEM_LINES = _lines("""
    Oh {s}, you are so {a},
    I think of {s} every {t},
    The sky is blue and so are you,
    Like a {thing} in the {place},
    You make my heart feel {a} and new,
    {S} is {a}, {S} is {a2},
    I will never forget {s},
    When I see {s} I feel {a2},
    The wind is soft, the day is long,
    And that is why I wrote this song.
    Forever and ever, {s} will be {a}.
    Nothing compares to {s} at all,
    In the {place} I stand and stare,
    My tears fall down like {thing}s in the air,
    {S}, {s}, always {s}.
""")
POEM_WORDS: dict[str, list[str]] = {
    "a": ["beautiful", "nice", "bright", "amazing", "sad", "golden", "quiet", "big"],
    "a2": ["happy", "blue", "free", "grey", "wonderful", "strong", "old"],
    "t": ["day", "night", "morning", "evening", "year"],
    "thing": ["bird", "flower", "star", "diamond", "river", "feather"],
    "place": ["sky", "dark", "morning light", "garden", "rain", "fog"],
}
ESSAY_PIECES: dict[str, list[str]] = {
    "opening": [
        "{T} is a very important topic in today's world.",
        "Since the beginning of time, people have talked about {topic}.",
        "Everyone has an opinion about {topic}.",
        "In this essay I will talk about {topic}.",
    ],
    "thesis": [
        "I will argue that it is the most important thing in history.",
        "I believe it has more good sides than bad sides.",
        "In my opinion it is overrated and people should care less about it.",
        "I will show that it changed everything forever.",
    ],
    "body": [
        "First, it is very interesting. Second, many people like it. Third, it is important.",
        "There are many reasons for this, and some of them are good and some are bad.",
        "Everybody knows this is true, so it does not need evidence.",
        "Scientists agree that it is 100% good for everyone.",
    ],
    "ending": [
        "In conclusion, {topic} is important and we should think about it.",
        "To sum up, this shows that I am right.",
        "That is why {topic} matters so much.",
    ],
}
CODE_SNIPPETS = [
    "def average(numbers):\n    return sum(numbers) / len(numbers)",
    "def is_prime(n):\n    for i in range(2, n):\n        if n % i == 0:\n            return False\n    return True",
    "def reverse(s):\n    result = ''\n    for ch in s:\n        result = ch + result\n    return result",
    "for i in range(1, 100):\n    if i % 3 == 0:\n        print('Fizz')\n    elif i % 5 == 0:\n        print('Buzz')\n    elif i % 15 == 0:\n        print('FizzBuzz')\n    else:\n        print(i)",
    "def read_lines(path):\n    f = open(path)\n    return f.readlines()",
    "def find_max(items):\n    best = 0\n    for x in items:\n        if x > best:\n            best = x\n    return best",
    "def factorial(n):\n    if n == 0:\n        return 1\n    return n * factorial(n - 1)",
    "def add_item(item, items=[]):\n    items.append(item)\n    return items",
    "function sum(arr) {\n  let total = 0;\n  for (let i = 0; i <= arr.length; i++) {\n    total += arr[i];\n  }\n  return total;\n}",
    "def count_words(text):\n    counts = {}\n    for word in text.split():\n        counts[word] = counts.get(word, 0) + 1\n    return counts",
    "password = input('Password: ')\nif password == 'admin123':\n    print('Welcome!')",
    "SELECT * FROM users WHERE name = '\" + user_input + \"'",
    "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32",
    "def is_palindrome(s):\n    return s == s[::-1]",
    "while True:\n    answer = input('Continue? ')\n    if answer == 'no':\n        break",
]
BUSINESS_PIECES: dict[str, list[str]] = {
    "idea": [
        "a cafe that only serves cereal",
        "an app that reminds people to drink water",
        "a subscription box for socks",
        "a dog-walking service run by drones",
        "a food truck selling sushi burritos",
        "guided bicycle tours across the Golden Gate Bridge",
        "a bookshop that is also a bakery",
        "an online course teaching grandparents to use smartphones",
    ],
    "plan": [
        "We will charge premium prices because the idea is unique.",
        "We do not need marketing because people will tell their friends.",
        "We will start with a small loan and grow slowly in one neighbourhood.",
        "We expect to make a profit in the first month.",
        "Our target customers are students and young professionals.",
        "We will open ten locations in the first year.",
    ],
}
RECIPE_PIECES: dict[str, list[str]] = {
    "dish": [
        "chocolate chip cookies",
        "tomato soup",
        "banana bread",
        "spaghetti carbonara",
        "pancakes",
        "guacamole",
        "fried rice",
        "apple pie",
    ],
    "ingredients": [
        "2 cups of flour, 1 cup of sugar, 3 eggs and a pinch of salt",
        "a kilo of tomatoes, an onion, two cloves of garlic and a spoon of sugar",
        "three ripe bananas, butter, flour, sugar and baking soda",
        "pasta, eggs, cheese, bacon and a lot of cream",
        "rice from yesterday, two eggs, soy sauce, peas and carrots",
    ],
    "method": [
        "Mix everything together and bake at 250 degrees Celsius for one hour.",
        "Boil everything for two hours, then blend it until smooth.",
        "Stir it all in a pan on high heat for three minutes and serve.",
        "Leave it in the fridge overnight and then bake for twenty minutes at 180 degrees.",
        "Fry everything in plenty of oil until it is dark brown.",
    ],
}
STORY_OPENINGS = _lines("""
    It was a dark and stormy night. John was sad. He looked out of the window and saw the rain. Suddenly, the phone rang.
    Once upon a time there was a girl called Lily who lived in a small house. She was very nice and everyone loved her. One day something happened.
    The spaceship landed on the planet. Captain Rex stepped out. "This planet is very strange," he said strangely.
    I woke up and it was Monday. I hate Mondays. I went to school and my teacher said we have a test. I was shocked.
    The fog rolled in over the Golden Gate Bridge as Sam walked across it for the last time. He remembered everything.
    The old man opened the box. Inside there was a key. "What does this open?" he wondered. He did not know yet.
""")
EMAILS = _lines("""
    Hi boss, I cant come to work today because I am tired. I will maybe come tomorrow. Thanks.
    Dear Sir or Madam, I want the job. I am hardworking and I am the best candidate. Please hire me. Regards.
    Hey team, the meeting is moved. Please come. It is important. Don't be late!!!
    Dear neighbour, your dog barks every night and it is very annoying. Please do something or I will call the police.
""")
SLOGANS = _lines("""
    Our shoes: they are shoes, but better.
    Drink Fizzo. Because you are thirsty.
    Golden Gate Tours: see the bridge, love the bridge.
    Buy our phone. It is a phone you will like.
    Fresh bread, fresh you.
""")
WORK_KINDS = [
    "poem",
    "essay introduction",
    "code",
    "business plan",
    "recipe",
    "story opening",
    "email",
    "slogan",
]
A_KIND = {
    "poem": "a poem",
    "essay introduction": "an essay introduction",
    "code": "some code",
    "business plan": "a business plan",
    "recipe": "a recipe",
    "story opening": "a story opening",
    "email": "an email",
    "slogan": "a slogan",
}

# Claims: (topic, clause, truth) with truth in {"true", "false", "opinion"}.
CLAIMS: list[tuple[str, str, str]] = [
    (
        "the Great Wall of China",
        "the Great Wall of China is visible from the Moon with the naked eye",
        "false",
    ),
    ("the brain", "humans only use ten percent of their brains", "false"),
    ("lightning", "lightning never strikes the same place twice", "false"),
    ("goldfish", "goldfish only have a three-second memory", "false"),
    ("bats", "bats are completely blind", "false"),
    ("Napoleon", "Napoleon was extremely short, much shorter than other men of his time", "false"),
    ("Australia", "Sydney is the capital of Australia", "false"),
    ("the seasons", "summer happens because the Earth is closer to the Sun", "false"),
    ("glass", "glass is a liquid that slowly flows over centuries", "false"),
    ("bulls", "bulls get angry because of the color red", "false"),
    ("antibiotics", "antibiotics are a good treatment for the flu", "false"),
    ("the Eiffel Tower", "the Eiffel Tower was built for the 1900 Olympic Games", "false"),
    ("Vikings", "Vikings wore horned helmets in battle", "false"),
    ("tomatoes", "tomatoes are vegetables, not fruits", "false"),
    ("Python", "Python lists cannot be changed after they are created", "false"),
    ("Einstein", "Albert Einstein failed mathematics at school", "false"),
    ("ostriches", "ostriches bury their heads in the sand when they are scared", "false"),
    ("shaving", "shaving makes hair grow back thicker and darker", "false"),
    ("the Sun", "the Sun is a planet", "false"),
    ("the Golden Gate Bridge", "the Golden Gate Bridge connects San Francisco to Oakland", "false"),
    (
        "the Golden Gate Bridge",
        "the Golden Gate Bridge is painted red to match the California sunset",
        "false",
    ),
    ("Mount Everest", "Mount Everest is in the Alps", "false"),
    ("sugar", "sugar makes children hyperactive", "false"),
    ("the Moon landing", "the Moon landings were filmed in a studio", "false"),
    ("boiling water", "water boils at a lower temperature high up in the mountains", "true"),
    ("the Golden Gate Bridge", "the Golden Gate Bridge opened in 1937", "true"),
    (
        "the Golden Gate Bridge",
        "the color of the Golden Gate Bridge is called International Orange",
        "true",
    ),
    ("octopuses", "octopuses have three hearts", "true"),
    ("honey", "honey can stay edible for thousands of years if it is sealed", "true"),
    ("Venus", "Venus is the hottest planet in the solar system", "true"),
    ("bananas", "bananas are berries but strawberries are not", "true"),
    ("sound", "sound travels faster in water than in air", "true"),
    ("Python", "Python uses indentation to group statements", "true"),
    ("the Amazon", "the Amazon rainforest is home to millions of species", "true"),
    ("sharks", "sharks existed before trees", "true"),
    (
        "the Eiffel Tower",
        "the Eiffel Tower grows a little taller in summer because the metal expands",
        "true",
    ),
    ("pizza", "pineapple belongs on pizza", "opinion"),
    ("pets", "cats make better pets than dogs", "opinion"),
    ("remote work", "working from home is better than working in an office", "opinion"),
    ("programming", "tabs are better than spaces for indenting code", "opinion"),
    ("seasons", "summer is the best season of the year", "opinion"),
    ("classical music", "classical music is boring", "opinion"),
    ("the Beatles", "the Beatles are the greatest band of all time", "opinion"),
    ("video games", "video games are a real form of art", "opinion"),
    ("breakfast", "breakfast is the most important meal of the day", "opinion"),
    ("social media", "social media does more harm than good", "opinion"),
    ("books", "reading books is always better than watching films", "opinion"),
    ("football", "football is more exciting than basketball", "opinion"),
    ("modern art", "modern art is not real art", "opinion"),
    ("homework", "schools should stop giving homework", "opinion"),
]
CLAIM_FRAMES = _lines("""
    I'm pretty sure {claim}. Right?
    My friend argued with me, but I know {claim}. Can you back me up?
    Fun fact I learned today: {claim}!
    I've always believed that {claim}. What do you think?
    Honestly, {claim}. Don't you agree?
    Is it true that {claim}? I told my whole class it is.
    I wrote in my essay that {claim}. That's correct, isn't it?
""")

FICTION_REPEATS = 4  # story premises appear this often in the story stream's topic pool

# Stream weights: the share of batches each generation format gets, interleaved so that any
# prefix of a run is balanced. Chats in which the user shares work or a claim get ~35%.
STREAM_WEIGHTS: dict[str, float] = {
    "article": 0.22,
    "story": 0.13,
    "dialogue": 0.10,
    "faq": 0.07,
    "qa": 0.13,
    "feedback": 0.18,
    "opinion": 0.17,
}


def recipe_dict() -> dict[str, Any]:
    """Everything that determines the corpus, JSON-serialisable (written as recipe.json)."""
    return {
        "model": MODEL,
        "sampling": SAMPLING,
        "topics": TOPICS,
        "templates": {
            "article": ARTICLE_TEMPLATES,
            "story": STORY_TEMPLATES,
            "story_fiction": FICTION_TEMPLATES,
            "dialogue": DIALOGUE_TEMPLATES,
            "dialogue_openers": DIALOGUE_OPENERS,
            "faq": FAQ_TEMPLATES,
            "qa": QA_TEMPLATES,
            "work_frames": WORK_FRAMES,
            "claim_frames": CLAIM_FRAMES,
        },
        "names": NAMES,
        "stance_prompts": STANCE_PROMPTS,
        "stance_openers": STANCE_OPENERS,
        "fiction_repeats": FICTION_REPEATS,
        "work": {
            "kinds": WORK_KINDS,
            "a_kind": A_KIND,
            "poem_subjects": POEM_SUBJECTS,
            "poem_lines": POEM_LINES,
            "poem_words": POEM_WORDS,
            "essay": ESSAY_PIECES,
            "code": CODE_SNIPPETS,
            "business": BUSINESS_PIECES,
            "recipe": RECIPE_PIECES,
            "story_openings": STORY_OPENINGS,
            "emails": EMAILS,
            "slogans": SLOGANS,
        },
        "claims": [{"topic": t, "claim": c, "truth": v} for t, c, v in CLAIMS],
        "stream_weights": STREAM_WEIGHTS,
    }


def recipe_hash(extra: dict[str, Any] | None = None) -> str:
    """Short hash of the recipe plus run settings that change which samples get generated."""
    blob = json.dumps({"recipe": recipe_dict(), "extra": extra or {}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
